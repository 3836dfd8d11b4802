"""JSON Schema export of every published event, and the rule that keeps versions compatible.

A published version may only change additively: new optional fields. Removing a field,
changing a field's type, or adding a required field needs a new version.

    python -m backhaul_contracts.schemas write   # write schemas/ (refuses incompatible changes)
    python -m backhaul_contracts.schemas check   # exit 1 if schemas/ is stale or broken
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from backhaul_contracts.envelope import Envelope, registry

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def generate() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema for the envelope and every registered event version."""
    out = {"Envelope.json": Envelope.model_json_schema(mode="serialization")}
    for (event_type, version), model in sorted(registry().items()):
        schema = model.model_json_schema(mode="serialization")
        schema["x-event-type"] = event_type
        schema["x-event-version"] = version
        if model.topic:
            schema["x-topic"] = model.topic
        out[f"{event_type}.v{version}.json"] = schema
    return out


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _resolve(root["$defs"][ref.removeprefix("#/$defs/")], root)
    return schema


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """The set of JSON types (or referenced definitions) a property schema admits."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return set().union(*(_types(s, root) for s in schema["anyOf"]))
    if "enum" in schema:
        return {f"enum:{v}" for v in schema["enum"]}
    if "const" in schema:
        return {f"enum:{schema['const']}"}
    kind = schema.get("type", "any")
    if kind == "object" and "properties" in schema:
        return {f"object:{schema.get('title', '')}"}
    if kind == "array":
        return {f"array:{sorted(_types(schema.get('items', {}), root))}"}
    fmt = schema.get("format")
    return {f"{kind}:{fmt}" if fmt else str(kind)}


def incompatibilities(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in `new` would break a consumer or producer written against `old`."""
    return _compare(old, old, new, new, path)


def _compare(
    old: dict[str, Any],
    old_root: dict[str, Any],
    new: dict[str, Any],
    new_root: dict[str, Any],
    path: str,
) -> list[str]:
    problems: list[str] = []
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        where = f"{path}{name}"
        if name not in new_props:
            problems.append(f"{where}: field removed")
            continue
        new_prop = new_props[name]
        lost = _types(old_prop, old_root) - _types(new_prop, new_root)
        if lost:
            problems.append(f"{where}: no longer accepts {sorted(lost)}")
        old_obj, new_obj = _resolve(old_prop, old_root), _resolve(new_prop, new_root)
        if "properties" in old_obj and "properties" in new_obj:
            problems += _compare(old_obj, old_root, new_obj, new_root, f"{where}.")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(added_required):
        problems.append(f"{path}{name}: new required field")
    return problems


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Problems with the checked-in schemas: incompatible changes first, then staleness."""
    problems: list[str] = []
    generated = generate()
    for path in sorted(directory.glob("*.json")):
        published = json.loads(path.read_text())
        current = generated.get(path.name)
        if current is None:
            problems.append(f"{path.name}: published version no longer exists")
            continue
        problems += [f"{path.name}: {p}" for p in incompatibilities(published, current)]
    for name, schema in generated.items():
        target = directory / name
        if not target.exists() or json.loads(target.read_text()) != schema:
            problems.append(f"{name}: checked-in schema is stale (run `make schemas`)")
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema; refuse (and return the reasons) if a change is incompatible."""
    generated = generate()
    breaking: list[str] = []
    for name, schema in generated.items():
        target = directory / name
        if target.exists():
            breaking += [
                f"{name}: {p}" for p in incompatibilities(json.loads(target.read_text()), schema)
            ]
    if breaking:
        return breaking
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in generated.items():
        (directory / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return []


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:] or ["check"])[0]
    problems = write() if command == "write" else check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems and command == "write":
        print(
            "incompatible change to a published version: add a new version instead", file=sys.stderr
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
