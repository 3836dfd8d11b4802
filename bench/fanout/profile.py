"""py-spy on one service for a short window, summarised: where its CPU time goes."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

# Inclusive buckets: a sample counts in every bucket one of its frames matches. py-spy names
# a frame "function (path/relative/to/sys.path.py:line)".
BUCKETS = {
    "sqlalchemy (ORM, Core, pool)": r"[(/]sqlalchemy/",
    "sqlite (aiosqlite thread, C calls)": r"[(/]aiosqlite/|[(/]sqlite3/",
    "asyncpg": r"[(/]asyncpg/",
    "aiokafka": r"[(/]aiokafka/",
    "faststream": r"[(/]faststream/",
    "pydantic (validation, serialisation)": r"[(/]pydantic(_core)?/",
    "json": r"[(/]json/",
    "logging (structlog)": r"[(/]structlog/|[(/]logging/",
    "opentelemetry": r"[(/]opentelemetry/",
    "http (uvicorn, starlette, fastapi)": r"[(/](uvicorn|starlette|fastapi|h11|httptools)/",
    "prometheus_client": r"[(/]prometheus_client/",
    "smtp (aiosmtplib)": r"[(/]aiosmtplib/|smtplib",
    "jinja2 (templates)": r"[(/]jinja2/",
    "alembic": r"[(/]alembic/",
}
OURS = re.compile(
    r"[(/](backhaul_kit|backhaul_contracts|accounts|billing|scheduler|provisioning|notifications)/"
)
# With --native the stack shows why a thread is off the CPU.
GIL_WAIT = re.compile(r"\btake_gil\b")
# SQLite's busy handler sleeping until the write lock frees (its own symbols are static, so
# the stack reads "_pysqlite_query_execute ... clock_nanosleep").
SQLITE_CALL = re.compile(r"pysqlite|sqlite3_")
SLEEPING = re.compile(r"nanosleep|usleep|sqliteDefaultBusyCallback|unixSleep")
WAITING = re.compile(
    r"_queue_SimpleQueue_get|select_epoll_poll|EpollSelector\.select|Condition\.wait"
    r"|uv__io_poll|epoll_wait"
    r"|Event\.wait|lock_PyThread_acquire_lock|Thread\._wait_for_tstate_lock|time_sleep"
)
# Where an asyncio task starts: the frame after the event loop's Handle._run (asyncio's in
# Python, or uvloop's in C: Cython names it ...uvloop_4loop_6Handle__run).
LOOP_HANDLE = re.compile(r"Handle\._run|uvloop\w*Handle__run|Handle__run")
TASKS = {
    "HTTP requests": r"[(/](uvicorn|starlette|fastapi|anyio)/",
    "Kafka consumer (FastStream)": r"[(/]faststream/",
    "outbox relay": r"messaging/relay\.py",
}


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


async def record(pid: int, seconds: float, rate: int = 97) -> dict[str, Any]:
    binary = py_spy()
    if binary is None:
        return {"error": "py-spy not installed (uv pip install py-spy)"}
    out = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / "stacks.txt"
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--native",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0 or not out.exists():
        return {"error": err.decode(errors="replace")[-500:]}
    summary = summarise(out.read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return summary


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def _is_python(frame: str) -> bool:
    return ".py:" in frame or frame.endswith(".py)")


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Where the busy samples go: by asyncio task (HTTP, consumer, relay, threads), by
    library (inclusive, below the event loop), by our own functions, and the deepest Python
    frame. Samples of threads waiting (epoll, a queue, a condition) are counted apart, and
    so are waits for the GIL and for SQLite's write lock."""
    samples = waiting = gil = sqlite_lock = 0
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    sqlite_calls: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(GIL_WAIT.search(f) for f in frames):
            gil += count
            continue
        if SLEEPING.search(frames[-1]) and any(SQLITE_CALL.search(f) for f in frames):
            sqlite_lock += count
            continue
        if any(WAITING.search(f) for f in frames):
            waiting += count
            continue
        samples += count
        python = [f for f in frames if _is_python(f)]
        own[_short(python[-1]) if python else _short(frames[-1])] += count
        loop = max((i for i, f in enumerate(frames) if LOOP_HANDLE.search(f)), default=None)
        head: list[str] = []
        if loop is not None:
            below = frames[loop + 1 :]
            head = [f for f in below if _is_python(f)][:6]
            task = next(
                (n for n, pattern in TASKS.items() if any(re.search(pattern, f) for f in head)),
                "other asyncio tasks",
            )
        else:
            below = frames
            entry = next((f for f in frames if "Thread.run" in f), None)
            after = frames[frames.index(entry) + 1] if entry and entry != frames[-1] else None
            task = f"thread: {_short(after)}" if after else "event loop itself"
        tasks[task] += count
        if loop is not None and head:
            entries[_short(head[0])] += count
        worker = next((i for i, f in enumerate(frames) if "_connection_worker_thread" in f), None)
        if worker is not None and worker + 1 < len(frames):
            sqlite_calls[f"{_short(frames[worker + 1])} ... {_short(frames[-1])}"] += count
        for bucket, pattern in BUCKETS.items():
            if any(re.search(pattern, f) for f in below):
                buckets[bucket] += count
        for short in {_short(f) for f in below if OURS.search(f)}:
            ours[short] += count

    def share(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"what": what, "percent": round(100 * c / max(samples, 1), 1)}
            for what, c in counter.most_common(n)
        ]

    return {
        "busy_samples": samples,
        "waiting_samples": waiting,
        "gil_wait_samples": gil,
        "sqlite_lock_wait_samples": sqlite_lock,
        "by_task": share(tasks, 8),
        "by_task_entry": share(entries, 8),
        "in_the_sqlite_thread": share(sqlite_calls, 10),
        "inclusive_by_library": share(buckets, len(BUCKETS)),
        "inclusive_by_our_function": share(ours, top),
        "self_time": share(own, top),
    }
