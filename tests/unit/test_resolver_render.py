"""The MTA pod's validating resolver: Unbound's configuration from the operator's settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mailward.render.resolver import (
    Forwarder,
    ResolverSettings,
    parse_forwarders,
    parse_trust_anchors,
    render_unbound_conf,
)
from mailward.settings import from_environment

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
# What the local cluster gives: its signed test parent as the anchor, its servers upstream.
LOCAL = {
    "MAILWARD_MTA_RESOLVER_TRUST_ANCHORS": (
        "; the signed parent of the demo zones\n"
        "test. 3600 IN DS 2371 13 2 "
        "1F987CC6583E92DF0890718C42A43F2BF0CE4A7F5D54A6C8D2F6EC1C0B5F3A2B\n"
    ),
    "MAILWARD_MTA_RESOLVER_FORWARDERS": "127.77.0.53, 127.77.0.54@5353",
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_local_cluster_configuration_matches_the_golden_file() -> None:
    text = render_unbound_conf(
        from_environment(LOCAL).mta_resolver,
        "127.77.0.25",
        "/etc/mailward/resolver",
        host_network=True,
    )
    golden = GOLDEN / "unbound.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_anchor_at_a_special_use_zone_lifts_unbounds_default_for_it() -> None:
    lines = _lines(render_unbound_conf(from_environment(LOCAL).mta_resolver, "::1", "/x"))
    assert 'trust-anchor: "test. IN DS 2371 13 2 ' in "\n".join(lines)
    assert 'local-zone: "test." nodefault' in lines
    assert "trust-anchor-file:" not in "\n".join(lines)
    # Forwarding to loopback needs Unbound's permission; the listener is the pod's alone.
    assert "do-not-query-localhost: no" in lines
    assert lines[lines.index("forward-zone:") :] == [
        "forward-zone:",
        'name: "."',
        "forward-addr: 127.77.0.53",
        "forward-addr: 127.77.0.54@5353",
    ]
    assert "interface: ::1" in lines


def test_default_is_full_recursion_anchored_at_the_root() -> None:
    lines = _lines(render_unbound_conf(ResolverSettings(), "127.0.0.1", "/etc/mailward/resolver"))
    assert 'trust-anchor-file: "/usr/share/dns/root.ds"' in lines
    assert "forward-zone:" not in lines
    assert "do-not-query-localhost: no" not in lines
    assert not [line for line in lines if line.startswith("local-zone:")]
    # Nothing written at run time: it runs on a read-only root file system.
    for setting in ('username: ""', 'chroot: ""', 'pidfile: ""', "do-daemonize: no"):
        assert setting in lines
    assert "use-syslog: no" in lines
    assert "val-log-level: 1" in lines
    assert not [line for line in lines if line.startswith("auto-trust-anchor-file")]
    assert {"access-control: 127.0.0.0/8 allow", "access-control: ::1/128 allow"} <= set(lines)
    # In the pod's own network namespace its queries leave by the pod's route.
    assert not [line for line in lines if line.startswith("outgoing-interface")]


def test_forwarders_off_loopback_need_no_exception() -> None:
    settings = ResolverSettings(forwarders=(Forwarder("192.0.2.53"), Forwarder("2001:db8::53")))
    lines = _lines(render_unbound_conf(settings, "127.0.0.1", "/x"))
    assert "do-not-query-localhost: no" not in lines
    forwarded = [line for line in lines if line.startswith("forward-addr:")]
    assert forwarded == ["forward-addr: 192.0.2.53", "forward-addr: 2001:db8::53"]


def test_trust_anchors_are_parsed_from_zone_file_text() -> None:
    anchors = parse_trust_anchors(
        "example.test. IN DS 1 8 2 "
        "AAAA0000AAAA0000AAAA0000AAAA0000AAAA0000AAAA0000AAAA0000AAAA0000\n"
        "home.arpa. DNSKEY 257 3 13 "
        "mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n"
    )
    assert [a.zone for a in anchors] == ["example.test.", "home.arpa."]
    assert anchors[0].record.startswith("example.test. IN DS 1 8 2 aaaa0000")
    text = render_unbound_conf(ResolverSettings(trust_anchors=anchors), "127.0.0.1", "/x")
    # The default zone that holds the anchored one is lifted, not the anchored name itself.
    assert 'local-zone: "test." nodefault' in text
    assert 'local-zone: "home.arpa." nodefault' in text
    assert parse_trust_anchors("  \n") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("test. IN A 127.0.0.1", "not a DS or DNSKEY record"),
        ("test. IN DS nonsense", "MAILWARD_MTA_RESOLVER_TRUST_ANCHORS"),
    ],
)
def test_other_records_are_refused_at_start(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trust_anchors(text)


def test_forwarders_are_addresses_with_an_optional_port() -> None:
    assert parse_forwarders(" 127.0.0.53 ,::1@5353,") == (
        Forwarder("127.0.0.53"),
        Forwarder("::1", 5353),
    )
    assert parse_forwarders("") == ()
    for bad in ("dns.example", "127.0.0.1@x", "127.0.0.1@70000"):
        with pytest.raises(ValueError, match="MAILWARD_MTA_RESOLVER_FORWARDERS"):
            parse_forwarders(bad)


@pytest.mark.skipif(shutil.which("unbound-checkconf") is None, reason="no unbound-checkconf")
def test_unbound_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    """Debian's own parser (the MTA image's Unbound), where this machine has it."""
    for settings in (ResolverSettings(), from_environment(LOCAL).mta_resolver):
        conf = tmp_path / "unbound.conf"
        conf.write_text(render_unbound_conf(settings, "127.0.0.1", str(tmp_path)))
        if not settings.trust_anchors and not Path("/usr/share/dns/root.ds").exists():
            continue
        result = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
