"""Write docs/api.md: every operation of every service, from the services' own OpenAPI.

uv run python tools/api_reference.py
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from backhaul_kit.auth import SERVICES
from backhaul_kit.config import ServiceSettings

TARGET = Path(__file__).resolve().parents[1] / "docs" / "api.md"
PORTS = {
    "accounts": 8001,
    "billing": 8002,
    "scheduler": 8003,
    "provisioning": 8004,
    "notifications": 8005,
}
HIDDEN = {"/healthz", "/readyz"}


def _settings_class(service: str) -> type[ServiceSettings]:
    config = importlib.import_module(f"{service}.config")
    return next(
        v
        for v in vars(config).values()
        if isinstance(v, type) and issubclass(v, ServiceSettings) and v is not ServiceSettings
    )


def main() -> None:
    lines = [
        "# API reference",
        "",
        "Generated from each service's OpenAPI by `uv run python tools/api_reference.py`; the",
        "live, complete description (bodies, fields, errors) is at `/docs` and `/openapi.json`",
        "of each service. Every operation needs a bearer token with `<service>:read` (GET) or",
        '`<service>:write` (everything else); errors are JSON `{"error", "message"}` with',
        "401, 403, 404, 409, 413 or 422.",
        "",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for service in SERVICES:
            settings = _settings_class(service)(
                database_url=f"sqlite+aiosqlite:///{scratch}/{service}.db"
            )
            bootstrap = importlib.import_module(f"{service}.bootstrap").bootstrap
            spec = bootstrap(settings).create_app().openapi()
            lines += [
                f"## {service} (port {PORTS[service]})",
                "",
                "| method | path | what |",
                "|---|---|---|",
            ]
            for path, item in spec["paths"].items():
                if path in HIDDEN:
                    continue
                for method, operation in item.items():
                    description = (operation.get("description") or "").strip().splitlines()
                    summary = description[0] if description else operation.get("summary", "")
                    lines.append(f"| {method.upper()} | `{path}` | {summary} |")
            lines.append("")
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text("\n".join(lines))
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
