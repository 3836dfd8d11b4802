"""Writes deploy/grafana/backhaul.json, the Grafana dashboard of Backhaul's Prometheus metrics.

The dashboard is generated so that its panels stay uniform; edit this file, then run
`uv run python deploy/grafana/build_dashboard.py` (tools/deploy-check.sh fails when the JSON
is not what this writes). Metric names are those of backhaul_kit.metrics; tests/deploy checks
that every metric a panel queries exists there (or is listed in PLANNED_METRICS).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("backhaul.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'service=~"$service"'
RATE = "$__rate_interval"

# Metrics a panel shows before the code exports them (the panel stays empty until then).
PLANNED_METRICS: set[str] = set()

Panel = dict[str, Any]


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def timeseries(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    width: int = 12,
    stack: bool = False,
) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": 8},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            _target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)
        ],
    }


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    thresholds: tuple[float, float] | None = None,
) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if thresholds:
        steps += [
            {"color": "orange", "value": thresholds[0]},
            {"color": "red", "value": thresholds[1]},
        ]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": 4, "h": 4},
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value",
        },
        "targets": [_target(expr, "", "A")],
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def quantile(q: float, metric: str, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({metric}_bucket{{{SEL}}}[{RATE}])))"
    )


# Every worker replica reports the same backlog and lag (they read shared state): max, not sum.
LAG = f"max by (service, topic, partition) (backhaul_consumer_lag{{{SEL}}})"

PANELS: list[Panel] = [
    stat(
        "Requests/s",
        "HTTP requests per second, all services selected.",
        f"sum(rate(backhaul_http_requests_total{{{SEL}}}[{RATE}]))",
        unit="reqps",
    ),
    stat(
        "5xx ratio",
        "Share of HTTP responses that were server errors.",
        f'sum(rate(backhaul_http_requests_total{{{SEL}, status=~"5.."}}[{RATE}]))'
        f" / sum(rate(backhaul_http_requests_total{{{SEL}}}[{RATE}]))",
        unit="percentunit",
        thresholds=(0.01, 0.05),
    ),
    stat(
        "Consumer lag",
        "Messages the consumer groups have yet to take, all topics.",
        f"sum({LAG})",
        thresholds=(1000, 10000),
    ),
    stat(
        "Outbox backlog",
        "Committed events the relays have not published yet.",
        f"sum(max by (service) (backhaul_outbox_backlog{{{SEL}}}))",
        thresholds=(100, 1000),
    ),
    stat(
        "Oldest unpublished event",
        "Age of the oldest event waiting in any outbox.",
        f"max(backhaul_outbox_oldest_age_seconds{{{SEL}}})",
        unit="s",
        thresholds=(5, 60),
    ),
    stat(
        "Dead letters (range)",
        "Messages put on dead-letter topics in the dashboard's time range.",
        f"sum(increase(backhaul_dead_letters_total{{{SEL}}}[$__range]))",
        thresholds=(1, 10),
    ),
    row("HTTP"),
    timeseries(
        "Request rate by service",
        "HTTP requests per second (health, readiness and metrics calls excluded).",
        [(f"sum by (service) (rate(backhaul_http_requests_total{{{SEL}}}[{RATE}]))", "{{service}}")],
        unit="reqps",
    ),
    timeseries(
        "Errors by service and status",
        "4xx and 5xx responses per second.",
        [
            (
                f'sum by (service, status) (rate(backhaul_http_requests_total{{{SEL}, status=~"[45].."}}[{RATE}]))',
                "{{service}} {{status}}",
            )
        ],
        unit="reqps",
    ),
    timeseries(
        "Latency by service (p50, p95, p99)",
        "Request duration quantiles from backhaul_http_request_duration_seconds.",
        [
            (quantile(0.5, "backhaul_http_request_duration_seconds", "service"), "{{service}} p50"),
            (quantile(0.95, "backhaul_http_request_duration_seconds", "service"), "{{service}} p95"),
            (quantile(0.99, "backhaul_http_request_duration_seconds", "service"), "{{service}} p99"),
        ],
        unit="s",
    ),
    timeseries(
        "Slowest routes (p95)",
        "The ten routes with the highest 95th percentile latency.",
        [
            (
                "topk(10, " + quantile(0.95, "backhaul_http_request_duration_seconds", "service, method, route") + ")",
                "{{service}} {{method}} {{route}}",
            )
        ],
        unit="s",
    ),
    row("Events"),
    timeseries(
        "Events handled by type",
        "Events each service's consumers handled per second, by event type.",
        [
            (
                f'sum by (service, event_type) (rate(backhaul_events_total{{{SEL}, outcome="handled"}}[{RATE}]))',
                "{{service}} {{event_type}}",
            )
        ],
        unit="ops",
    ),
    timeseries(
        "Events by outcome",
        "handled, duplicate (already in the inbox), ignored, dead_lettered.",
        [
            (
                f"sum by (outcome) (rate(backhaul_events_total{{{SEL}}}[{RATE}]))",
                "{{outcome}}",
            )
        ],
        unit="ops",
        stack=True,
    ),
    timeseries(
        "Failed attempts by type",
        "Handling attempts that raised; retried until the attempt limit, then dead-lettered.",
        [
            (
                f"sum by (service, event_type) (rate(backhaul_event_failures_total{{{SEL}}}[{RATE}]))",
                "{{service}} {{event_type}}",
            )
        ],
        unit="ops",
    ),
    timeseries(
        "Handling time by type (p95)",
        "Time to handle one event, its transaction included.",
        [
            (
                quantile(0.95, "backhaul_event_handling_seconds", "service, event_type"),
                "{{service}} {{event_type}}",
            )
        ],
        unit="s",
    ),
    timeseries(
        "Events per consumer transaction (mean)",
        "How many events a worker handles in one transaction and one offset commit: 1 when "
        "idle, rising under a storm as each poll takes what has piled up.",
        [
            (
                f"sum by (service) (rate(backhaul_consumer_batch_size_sum{{{SEL}}}[{RATE}]))"
                f" / sum by (service) (rate(backhaul_consumer_batch_size_count{{{SEL}}}[{RATE}]))",
                "{{service}}",
            )
        ],
    ),
    row("Kafka and outbox"),
    timeseries(
        "Consumer lag by service and topic",
        "Messages behind the end of each topic, per consumer group (the service).",
        [(f"sum by (service, topic) ({LAG})", "{{service}} {{topic}}")],
    ),
    timeseries(
        "Outbox backlog by service",
        "Committed events not yet published. Grows when Kafka is unreachable.",
        [(f"max by (service) (backhaul_outbox_backlog{{{SEL}}})", "{{service}}")],
    ),
    timeseries(
        "Oldest unpublished event by service",
        "How long the oldest outbox event has waited: the relay's delay.",
        [(f"max by (service) (backhaul_outbox_oldest_age_seconds{{{SEL}}})", "{{service}}")],
        unit="s",
    ),
    timeseries(
        "Events published by service",
        "Events the outbox relays published per second.",
        [(f"sum by (service) (rate(backhaul_outbox_published_total{{{SEL}}}[{RATE}]))", "{{service}}")],
        unit="ops",
    ),
    row("Dead letters and scheduler"),
    timeseries(
        "Dead letters by topic",
        "Messages put on each dead-letter topic (per hour).",
        [
            (
                f"sum by (service, topic) (increase(backhaul_dead_letters_total{{{SEL}}}[1h]))",
                "{{service}} {{topic}}",
            )
        ],
    ),
    timeseries(
        "Dead-lettered events by type",
        "Events that exhausted their attempts (per hour), by consumer and type.",
        [
            (
                f'sum by (service, event_type) (increase(backhaul_events_total{{{SEL}, outcome="dead_lettered"}}[1h]))',
                "{{service}} {{event_type}}",
            )
        ],
    ),
    timeseries(
        "Scheduler firing lag",
        "How late scheduled events fire after their due time.",
        [
            (quantile(0.5, "backhaul_scheduler_firing_lag_seconds", "service"), "p50"),
            (quantile(0.99, "backhaul_scheduler_firing_lag_seconds", "service"), "p99"),
        ],
        unit="s",
        width=24,
    ),
]


def _layout(panels: list[Panel]) -> list[Panel]:
    """Place panels left to right, wrapping at Grafana's 24 columns."""
    x = y = row_height = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        grid["x"], grid["y"] = x, y
        panel["id"] = number
        x += grid["w"]
        row_height = max(row_height, grid["h"])
        if panel["type"] == "row":
            x, y, row_height = 0, y + grid["h"], 0
    return panels


def dashboard() -> dict[str, Any]:
    return {
        "uid": "backhaul-overview",
        "title": "Backhaul",
        "description": "Requests, events, consumer lag, outbox and dead letters of every Backhaul service.",
        "tags": ["backhaul"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "service",
                    "label": "Service",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(backhaul_http_requests_total, service)",
                        "refId": "service",
                    },
                    "definition": "label_values(backhaul_http_requests_total, service)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": _layout(PANELS),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != render():
            sys.exit(f"{OUT} is stale: run `uv run python deploy/grafana/build_dashboard.py`")
        print(f"ok: {OUT.name} is current")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT}")
