"""What the chart ships besides templates: the Grafana dashboard asks for metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "mailward" / "files" / "grafana-dashboard.json"
# What prometheus_client appends to a metric's name in the exposition format.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _defined_metrics() -> set[str]:
    source = "\n".join(p.read_text() for p in (REPO / "operator" / "mailward").rglob("*.py"))
    return set(re.findall(r'"(mailward_[a-z_]+)"', source))


def test_every_dashboard_query_names_a_metric_mailward_serves() -> None:
    defined = _defined_metrics()
    assert len(defined) > 10
    dashboard = json.loads(DASHBOARD.read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"mailward_[a-z_]+", target["expr"])
    }
    assert asked
    unknown = set()
    for name in asked:
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        if base not in defined:
            unknown.add(name)
    assert unknown == set()
