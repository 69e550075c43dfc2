"""TLSRPT sending (render/tlsrpt_sending.py): main.cf, the reporter's file, the pod's containers
and the spec that switches it. The daemons themselves run in
tests/integration/test_tlsrpt_sending.py."""

from __future__ import annotations

import configparser
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailward.api.mailserver import MailServerSpec
from mailward.api.tlsrpt_sending import TLSReportSending
from mailward.reconcile import parse_spec
from mailward.render.mta_server import mta_options
from mailward.render.postfix import DomainConfig, MTAOptions, render_postfix
from mailward.render.resolver import ResolverSettings
from mailward.render.tlsrpt_sending import (
    POSTDROP_GID,
    REPORTER_CONF,
    SPREAD_OUT_DELIVERY_SECONDS,
    TLSRPT_DIR,
    ReporterPaths,
    TLSRPTSending,
    from_spec,
    render_reporter_conf,
)
from tests.manifests import valid_maildomain
from tests.own_mta import own_objects

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / REPORTER_CONF
DOMAIN = DomainConfig("example.test", ("mx1.example.test",), ("alice",))


def _spec(**mta: Any) -> Any:
    manifest = valid_maildomain()["spec"]
    manifest["mta"] = mta
    return parse_spec(manifest)


def _objects(**mta: Any) -> tuple[dict[str, str], dict[str, Any]]:
    objects = own_objects(_spec(**mta), ["alice"], ResolverSettings())
    configmap = next(o for o in objects if o["metadata"]["name"].endswith("-config"))
    statefulset = next(o for o in objects if o["kind"] == "StatefulSet")
    return configmap["data"], statefulset["spec"]["template"]["spec"]


def _parse(text: str) -> configparser.ConfigParser:
    # As tlsrpt-reporter reads it: configparser with its default (%) interpolation.
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return parser


def test_postfix_reports_to_the_collectors_socket_only_when_enabled() -> None:
    off = render_postfix([DOMAIN], MTAOptions())
    with pytest.raises(KeyError):
        off.parameter("smtp_tlsrpt_enable")
    on = render_postfix([DOMAIN], MTAOptions(tlsrpt=TLSRPTSending()))
    assert on.parameter("smtp_tlsrpt_enable") == "yes"
    assert on.parameter("smtp_tlsrpt_socket_name") == f"{TLSRPT_DIR}/collectd.sock"
    # A resumed TLS session is the same handshake: counted once.
    assert on.parameter("smtp_tlsrpt_skip_reused_handshakes") == "yes"
    # DANE needs DNSSEC lookups; Postfix disables TLSRPT without DNS.
    assert on.parameter("smtp_dns_support_level") == "dnssec"


def test_the_reporter_file_matches_the_golden_file() -> None:
    text = render_reporter_conf(TLSRPTSending(), "example.test")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_the_reporter_file_ties_the_three_daemons_and_postfix_together() -> None:
    conf = _parse(render_reporter_conf(TLSRPTSending(), "example.test"))
    collectd, fetcher, reportd = (
        conf["tlsrpt_collectd"],
        conf["tlsrpt_fetcher"],
        conf["tlsrpt_reportd"],
    )
    # The collector listens where Postfix sends, and the fetcher reads what it writes.
    assert collectd["socketname"] == _pod_socket()
    assert fetcher["storage"] == collectd["storage"] == f"sqlite://{TLSRPT_DIR}/collectd.sqlite"
    assert shlex.split(reportd["fetchers"]) == [
        "tlsrpt-fetcher",
        "--config_file",
        f"/etc/mailward/tlsrpt/{REPORTER_CONF}",
    ]
    # Defaults from the MTA's domain; the sender of the mail is the contact.
    assert reportd["organization_name"] == "example.test"
    assert reportd["contact_info"] == reportd["sender_address"] == "postmaster@example.test"
    sendmail = shlex.split(reportd["sendmail_script"])
    assert sendmail == [
        "MAIL_CONFIG=/etc/mailward/postfix",
        "sendmail",
        "-i",
        "-t",
        "-f",
        "postmaster@example.test",
    ]
    assert reportd["http_script"] == "mailward-tlsrpt-post"
    assert int(reportd["spread_out_delivery"]) == SPREAD_OUT_DELIVERY_SECONDS


def test_the_sender_identity_can_be_set_and_is_kept_to_one_safe_line() -> None:
    conf = _parse(render_reporter_conf(TLSRPTSending("Example AG", "tls@example.test"), "x.test"))
    assert conf["tlsrpt_reportd"]["organization_name"] == "Example AG"
    assert conf["tlsrpt_reportd"]["sender_address"] == "tls@example.test"
    for bad in ("100% mail", "two\nlines"):
        with pytest.raises(ValueError, match="no line breaks or %"):
            render_reporter_conf(TLSRPTSending(bad), "example.test")
        with pytest.raises(ValidationError):
            TLSReportSending.model_validate({"organizationName": bad})
    with pytest.raises(ValidationError):
        TLSReportSending.model_validate({"contactInfo": "not an address"})


def test_a_test_layout_moves_only_the_paths() -> None:
    paths = ReporterPaths("/tmp/t/tlsrpt", "/tmp/t/r.cfg", "/tmp/t/config")
    pod = render_reporter_conf(TLSRPTSending(), "example.test").splitlines()
    moved = render_reporter_conf(TLSRPTSending(), "example.test", paths).splitlines()
    differing = {a.split(" = ")[0] for a, b in zip(pod, moved, strict=True) if a != b}
    assert differing == {"storage", "socketname", "dbname", "fetchers", "sendmail_script"}


def test_the_pod_runs_the_collector_before_postfix_and_the_reporter_beside_it() -> None:
    data, pod = _objects()
    sidecars = [c["name"] for c in pod["initContainers"]]
    assert sidecars[-1] == "tlsrpt-collectd"
    containers = {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}
    assert [c["name"] for c in pod["containers"]] == ["postfix", "tlsrpt-reportd"]
    assert REPORTER_CONF in data
    main_cf = data["main.cf"]
    socket = _parse(data[REPORTER_CONF])["tlsrpt_collectd"]["socketname"]
    assert f"smtp_tlsrpt_socket_name = {socket}\n" in main_cf

    collectd, reportd = containers["tlsrpt-collectd"], containers["tlsrpt-reportd"]
    assert collectd["restartPolicy"] == "Always"
    assert collectd["startupProbe"]["exec"]["command"] == ["test", "-S", socket]
    # Neither holds a capability nor runs as root; the reporter is nobody in postdrop.
    for container in (collectd, reportd):
        context = container["securityContext"]
        assert context["runAsUser"] == 65534
        assert context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
        assert container["ports"] == []
    assert collectd["securityContext"]["runAsGroup"] == 65534
    assert reportd["securityContext"]["runAsGroup"] == POSTDROP_GID

    mounts = {
        name: {m["name"]: m for m in c.get("volumeMounts", [])} for name, c in containers.items()
    }
    # Postfix only connects to the socket: read-only. The reporter writes the maildrop.
    assert mounts["postfix"]["tlsrpt"] == {
        "name": "tlsrpt",
        "mountPath": TLSRPT_DIR,
        "readOnly": True,
    }
    assert mounts["tlsrpt-reportd"]["queue"]["mountPath"] == "/var/spool/postfix"
    assert mounts["tlsrpt-reportd"]["config"]["readOnly"] is True
    assert "queue" not in mounts["tlsrpt-collectd"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tlsrpt"] == {"name": "tlsrpt", "emptyDir": {"sizeLimit": "64Mi"}}
    assert volumes["tlsrpt-config"]["configMap"]["items"] == [
        {"key": REPORTER_CONF, "path": REPORTER_CONF}
    ]


def test_disabled_in_the_spec_nothing_of_it_is_rendered() -> None:
    data, pod = _objects(tlsReports={"enabled": False})
    names = [c["name"] for c in [*pod["initContainers"], *pod["containers"]]]
    assert not [n for n in names if n.startswith("tlsrpt")]
    assert REPORTER_CONF not in data
    assert "smtp_tlsrpt" not in data["main.cf"]
    assert "tlsrpt" not in [v["name"] for v in pod["volumes"]]


def test_both_kinds_of_spec_default_to_sending() -> None:
    assert from_spec(_spec().mta.tls_reports) == TLSRPTSending()
    assert mta_options(_spec().mta).tlsrpt == TLSRPTSending()
    fleet = MailServerSpec.model_validate(
        {
            "hosts": [{"host": "mx1.fleet.test"}],
            "tls": {"secretName": "fleet-tls"},
            "tlsReports": {"organizationName": "Fleet Ops", "contactInfo": "ops@fleet.test"},
        }
    )
    assert mta_options(fleet).tlsrpt == TLSRPTSending("Fleet Ops", "ops@fleet.test")
    assert from_spec(TLSReportSending(enabled=False)) is None


def _pod_socket() -> str:
    config = render_postfix([DOMAIN], MTAOptions(tlsrpt=TLSRPTSending()))
    return config.parameter("smtp_tlsrpt_socket_name")
