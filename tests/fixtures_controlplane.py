"""Pytest plugin: one real kube-apiserver + etcd for the whole test session.

Registered from tests/conftest.py through `pytest_plugins`. The control plane starts on first use
(only tests that ask for `control_plane` pay for it) and is stopped at the end of the session,
whether the tests passed, failed or were interrupted. A watchdog process also stops it if pytest
itself is killed before its teardown runs.

The binaries come from $MAILWARD_CONTROLPLANE_BIN or tools/controlplane/build.sh. Build them
before running pytest: a cold build takes longer than the per-test timeout.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailward_localstack._process import start_watchdog
from mailward_localstack.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    watchdog = start_watchdog(plane.state_dir)
    try:
        plane.start()  # leaves nothing running when it fails
        yield plane
    finally:
        plane.stop()
        watchdog.terminate()
        watchdog.wait()
