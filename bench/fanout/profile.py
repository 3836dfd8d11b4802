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
# Leaves where a thread waits rather than works (py-spy's idle detection misses some).
WAITING = re.compile(
    r"^(EpollSelector\.select|Condition\.wait|Event\.wait|Thread\._wait_for_tstate_lock"
    r"|Queue\.get|sleep) "
)


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
        "--nonblocking",
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


def summarise(raw: str, top: int = 15) -> dict[str, Any]:
    """Self time by function, inclusive time by library and by our own functions, as shares
    of the busy samples (a thread waiting in epoll or on a condition is not busy)."""
    samples = waiting = 0
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = _short(frames[-1])
        if WAITING.match(leaf):
            waiting += count
            continue
        samples += count
        own[leaf] += count
        for bucket, pattern in BUCKETS.items():
            if any(re.search(pattern, f) for f in frames):
                buckets[bucket] += count
        for short in {_short(f) for f in frames if OURS.search(f)}:
            ours[short] += count

    def share(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"what": what, "percent": round(100 * c / max(samples, 1), 1)}
            for what, c in counter.most_common(n)
        ]

    return {
        "busy_samples": samples,
        "waiting_samples": waiting,
        "self_time": share(own, top),
        "inclusive_by_library": share(buckets, len(BUCKETS)),
        "inclusive_by_our_function": share(ours, top),
    }
