"""Pytest plugin: a real Flux pipeline on the `cluster` node (mailward_localstack/flux.py).

`flux` installs Flux's source-controller and kustomize-controller (built from the Go module
proxy at the version tools/flux/go.mod pins, image `mailward.local/flux`) as host-network pods
and starts a Git server on loopback; only tests that ask for it pay for it (the first build on a
machine takes minutes, after that about 20 s). Their addresses are in the cluster's /24, hosts
`FLUX_HOSTS`, which no other fixture uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailward_localstack.flux import Flux, FluxAddresses, install, uninstall
from mailward_localstack.images import ImageArchive
from mailward_localstack.node import Node
from mailward_localstack.stack import Stack

# Git server, source-controller (and its artifact server), kustomize-controller.
FLUX_HOSTS = (84, 85, 86)


@pytest.fixture(scope="session")
def flux(cluster: Stack) -> Iterator[Flux]:
    git, source, kustomize = (cluster.layout.address(n) for n in FLUX_HOSTS)
    node = Node(
        cluster.state_dir / "node", cluster.plane, sandbox_image=cluster.images["pause"].ref
    )

    def import_image(image: ImageArchive) -> None:
        node.import_image(image)

    pipeline = install(
        cluster.kubeconfig,
        cluster.state_dir / "flux",
        FluxAddresses(git=git, source_controller=source, kustomize_controller=kustomize),
        import_image,
    )
    try:
        yield pipeline
    finally:
        uninstall(pipeline)
