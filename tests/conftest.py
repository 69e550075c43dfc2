"""Fixtures of every tier, and what a failed test prints besides its traceback."""

from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures_controlplane",
    "tests.fixtures_dns",
    "tests.fixtures_secondary",
    "tests.fixtures_compliance",
    "tests.fixtures_mta",  # before fixtures_operator, which imports it
    "tests.fixtures_operator",
    "tests.fixtures_dnspublish",
    "tests.fixtures_tlsrpt",
    "tests.fixtures_policy",
    "tests.fixtures_cluster",
    "tests.fixtures_flux",
    "tests.fixtures_certmanager",
]


# A failed test against the operator process shows the end of its log: a flake seen only in CI
# is then explained by the run that saw it.
OPERATOR_LOG_LINES = 150


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    # Imported here: a plugin module imported by conftest itself loses pytest's assert rewriting.
    from mailward_localstack.controlplane import kubectl
    from mailward_localstack.stack import RELEASE_NAMESPACE, Stack
    from tests.fixtures_operator import OperatorProcess

    funcargs = getattr(item, "funcargs", {})
    operator = funcargs.get("operator")
    if isinstance(operator, OperatorProcess):
        tail = operator.log().splitlines()[-OPERATOR_LOG_LINES:]
        report.sections.append((f"operator log, last {len(tail)} lines", "\n".join(tail)))
    cluster = funcargs.get("cluster")
    if isinstance(cluster, Stack):
        # The chart's operator pod on the real node: what it said while the test waited.
        log = kubectl(
            cluster.kubeconfig, "logs", "-n", RELEASE_NAMESPACE, "deploy/mailward",
            f"--tail={OPERATOR_LOG_LINES}", check=False,
        )  # fmt: skip
        report.sections.append(("operator pod log", log))
