"""Settings of the scheduler service."""

from functools import lru_cache

from pydantic import Field

from backhaul_kit.config import ServiceSettings


class SchedulerSettings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = 8003

    # Firing: the timer sleeps until the next event is due (at least `firing_interval` and at
    # most `firing_idle_seconds`), and wakes at once when a transaction of this service
    # commits events (a new scheduled event); how many it claims at once.
    firing_interval_seconds: float = Field(default=0.1, gt=0, le=5)
    firing_idle_seconds: float = Field(default=1.0, gt=0, le=60)
    firing_batch_size: int = Field(default=1000, ge=1, le=5000)
    # Concurrent firing loops in one process while a backlog is fired: one turns its claim
    # into commands while another waits on the database (the others rest when nothing is
    # behind). SQLite's single writer runs them in turn.
    firing_lanes: int = Field(default=3, ge=1, le=8)
    # A dispatched event whose owner has not answered within this time fails with "no answer".
    answer_timeout_seconds: float = Field(default=600.0, gt=0)


@lru_cache
def get_settings() -> SchedulerSettings:
    return SchedulerSettings()
