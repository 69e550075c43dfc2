"""Pytest plugin: real cert-manager on the `cluster` node (mailward_localstack/certmanager.py).

`cert_manager` installs cert-manager's controller (built from the Go module proxy at the
version tools/cert-manager/go.mod pins, image `mailward.local/cert-manager`) as a host-network
pod, its CRDs, and the ClusterIssuer `mailward-local-ca` that signs with the cluster's local CA
(`cluster.ca`); only tests that ask for it pay for it (the first build on a machine takes
minutes). The controller's address is in the cluster's /24, host `CERT_MANAGER_HOST`, which no
other fixture or test uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailward_localstack.certmanager import CertManager, CertManagerAddresses, install, uninstall
from mailward_localstack.images import ImageArchive
from mailward_localstack.node import Node
from mailward_localstack.stack import Stack

# The controller's metrics (9402) and /livez (9403).
CERT_MANAGER_HOST = 88


@pytest.fixture(scope="session")
def cert_manager(cluster: Stack) -> Iterator[CertManager]:
    node = Node(
        cluster.state_dir / "node", cluster.plane, sandbox_image=cluster.images["pause"].ref
    )

    def import_image(image: ImageArchive) -> None:
        node.import_image(image)

    handle = install(
        cluster.kubeconfig,
        cluster.state_dir / "cert-manager",
        CertManagerAddresses(controller=cluster.layout.address(CERT_MANAGER_HOST)),
        import_image,
        cluster.ca,
    )
    try:
        yield handle
    finally:
        uninstall(handle)
