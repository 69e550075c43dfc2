"""Pytest plugin: real cert-manager on the `cluster` node (mailward_localstack/certmanager.py).

`stack.up` installs cert-manager's controller (built from the Go module proxy at the version
tools/cert-manager/go.mod pins, image `mailward.local/cert-manager`) as a host-network pod, its
CRDs, and the ClusterIssuer `mailward-local-ca` that signs with the cluster's local CA
(`cluster.ca`), as `make demo` does: the example's certificates come from it. `cert_manager`
is a handle on it. The controller's address is the layout's `cert_manager` (host 88).
"""

from __future__ import annotations

import pytest

from mailward_localstack.certmanager import CertManager, CertManagerAddresses, attach
from mailward_localstack.stack import Stack


@pytest.fixture(scope="session")
def cert_manager(cluster: Stack) -> CertManager:
    """The cert-manager `stack.up` installed (the example's certificates come from it)."""
    return attach(
        cluster.kubeconfig,
        CertManagerAddresses(controller=cluster.layout.cert_manager),
        cluster.ca,
    )
