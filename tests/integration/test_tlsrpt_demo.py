"""The demo's collector: started from the configuration read back from the API server, fed a
sample report, and the operator shows its numbers in `status.tlsRpt`."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailward.localstack._process import free_port
from mailward.localstack.demo_tlsrpt import start_tlsrpt_collector
from mailward.localstack.pki import LocalCA
from tests.fixtures_tlsrpt import TLSRptCluster
from tests.manifests import minimal_maildomain
from tests.net import addr


def test_demo_collector_runs_the_rendered_configuration(
    tmp_path: Path,
    tlsrpt_control_plane: Any,
    tlsrpt_operator: Callable[[str], TLSRptCluster],
    local_ca: LocalCA,
) -> None:
    host = addr(28)
    root = os.geteuid() == 0
    ports = (25, 443, 9108) if root else (free_port(host), free_port(host), free_port(host))
    api_url = f"http://{host}:{ports[2]}"
    cluster = tlsrpt_operator(api_url)
    kube = cluster.kube
    namespace = "default"
    cert = local_ca.issue_server_cert(["mx.minimal.test"])
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "mx-minimal-test-tls", "namespace": namespace},
            "data": {
                "tls.crt": base64.b64encode(cert.chain_file.read_bytes()).decode(),
                "tls.key": base64.b64encode(cert.key_file.read_bytes()).decode(),
            },
        }
    )
    # No rua in the spec: the collector's own mailbox (tlsrpt@tlsrpt.minimal.test) is used.
    kube.apply(minimal_maildomain(namespace=namespace))
    collector = start_tlsrpt_collector(
        tmp_path,
        cluster.kubeconfig,
        namespace=namespace,
        address=host,
        smtp_port=ports[0],
        https_port=ports[1],
        api_port=ports[2],
        feed_sample=True,
    )
    try:
        assert collector.operator_env == {"MAILWARD_TLSRPT_COLLECTOR_URL": api_url}

        def shown() -> dict[str, Any] | None:
            status = kube.get_maildomain(namespace, "minimal").get("status", {})
            tls_rpt = status.get("tlsRpt")
            return dict(tls_rpt) if tls_rpt and tls_rpt["reports7d"] else None

        tls_rpt = kube.wait_for("status.tlsRpt with the sample's numbers", shown, timeout=60)
        assert tls_rpt["last24h"] == {"successful": 2170, "failed": 30}
        assert tls_rpt["topFailures"] == [{"resultType": "tlsa-invalid", "sessions": 30}]
        assert tls_rpt["organisations"] == ["Demo Sender Inc."]
        # The collector's config is the rendered one; only addresses and paths are local.
        configmap = kube.kubectl(
            "get",
            "configmap",
            "mailward-tlsrpt",
            "-n",
            namespace,
            "-o",
            "jsonpath={.data.collector\\.json}",
        ).stdout
        assert '"tlsrpt.minimal.test"' in configmap
        assert "tlsrpt.minimal.test" in collector.config_file.read_text()
    finally:
        collector.process.stop()
