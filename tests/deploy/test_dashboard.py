"""The Grafana dashboard queries the metrics the services export, and all of them."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

from prometheus_client import Counter, Gauge, Histogram

from backhaul_kit import metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exported() -> dict[str, set[str]]:
    """Each metric of backhaul_kit.metrics -> the series names Prometheus scrapes for it."""
    series: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, Counter):
            name = collector._name
            series[f"{name}_total"] = {f"{name}_total"}
        elif isinstance(collector, Histogram):
            name = collector._name
            series[name] = {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif isinstance(collector, Gauge):
            series[collector._name] = {collector._name}
    return series


def _queried() -> set[str]:
    dashboard = json.loads((GRAFANA / "backhaul.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    return {name for expr in exprs for name in re.findall(r"\bbackhaul_[a-z_]+", expr)}


def test_dashboard_json_is_what_the_builder_writes() -> None:
    assert (GRAFANA / "backhaul.json").read_text() == _builder().render()


def test_dashboard_queries_only_exported_metrics() -> None:
    exported = set().union(*_exported().values())
    unknown = _queried() - exported - _builder().PLANNED_METRICS
    assert not unknown, f"the services export no such metrics: {sorted(unknown)}"


def test_dashboard_shows_every_exported_metric() -> None:
    queried = _queried()
    unshown = {name for name, series in _exported().items() if not series & queried}
    assert not unshown, f"no panel shows {sorted(unshown)}"
