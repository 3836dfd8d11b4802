"""deploy/README.md's configuration reference names every setting a service reads."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from backhaul_kit.config import ServiceSettings

README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
SERVICES = ("accounts", "billing", "scheduler", "provisioning", "notifications")


def _settings(service: str) -> set[str]:
    module = importlib.import_module(f"{service}.config")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    ]
    return {name.upper() for cls in classes for name in cls.model_fields}


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_is_in_the_configuration_reference(service: str) -> None:
    reference = README.read_text().split("## Configuration reference", 1)[1]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", reference, re.MULTILINE))
    missing = _settings(service) - documented
    assert not missing, f"deploy/README.md does not describe {service}'s {sorted(missing)}"
