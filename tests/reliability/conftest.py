"""Fault tests: each scenario runs its own cluster and writes its figures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from .harness import Cluster, Figures

RESULTS = Path(__file__).resolve().parents[2] / "var" / "reliability"


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Kafka and the five services on SQLite; a test parametrized indirectly passes other
    options (`{"database": "postgresql", "own_postgres": ("provisioning",)}`)."""
    running = Cluster(**getattr(request, "param", {}))
    try:
        running.start()  # inside: a start that fails half-way still stops what it started
        yield running
    finally:
        running.stop()


@pytest.fixture
def record() -> Iterator[list[Figures]]:
    """Scenario figures, written to var/reliability/<scenario>.json for docs/reliability.md."""
    kept: list[Figures] = []
    yield kept
    RESULTS.mkdir(parents=True, exist_ok=True)
    for figures in kept:
        (RESULTS / f"{figures.scenario}.json").write_text(json.dumps(asdict(figures), indent=2))
