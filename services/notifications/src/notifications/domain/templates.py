"""Message templates: Jinja2 in a sandbox, checked when configured, rendered when triggered.

A template sees four things: `account` (id, name, parent_account_id), `contact` (the
recipient: name, email), `event` (the triggering event's fields) and `event_type` /
`occurred_at`. Anything else is refused when the trigger is saved, so a typo is a 422 then
rather than a silent blank in a customer's email later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

ACCOUNT_FIELDS = frozenset({"id", "name", "parent_account_id"})
CONTACT_FIELDS = frozenset({"name", "email"})
TOP_LEVEL = frozenset({"account", "contact", "event", "event_type", "occurred_at"})

# Plain-text email: no HTML autoescaping; undefined names fail loudly instead of rendering "".
_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class TemplateProblem(ValueError):
    """A template does not compile or names a variable it will not have."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def check(source: str, *, event_fields: Iterable[str], what: str) -> None:
    """Refuse a template that does not compile or uses an unknown variable, naming it."""
    try:
        tree = _environment.parse(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TemplateProblem(f"{what} does not compile{where}: {exc}") from None
    known_globals = set(_environment.globals)
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name not in TOP_LEVEL and name not in known_globals:
            raise TemplateProblem(
                f"{what} uses unknown variable {name!r}; known: {', '.join(sorted(TOP_LEVEL))}"
            )
    fields = {
        "event": frozenset(event_fields),
        "account": ACCOUNT_FIELDS,
        "contact": CONTACT_FIELDS,
    }
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        owner = getattr(node, "node", None)
        if not (isinstance(owner, nodes.Name) and owner.name in fields):
            continue
        if isinstance(node, nodes.Getattr):
            attribute = node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            attribute = node.arg.value
        else:
            continue
        if attribute not in fields[owner.name]:
            raise TemplateProblem(
                f"{what} uses unknown variable '{owner.name}.{attribute}'; "
                f"{owner.name} has: {', '.join(sorted(fields[owner.name]))}"
            )


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    """Compiling is most of a render's cost; the same few templates render all day."""
    return _environment.from_string(source)


def render(subject: str, body: str, variables: Mapping[str, Any]) -> Rendered:
    """Render both templates; raises TemplateProblem when the data does not fit them."""
    try:
        rendered_subject = _compiled(subject).render(variables)
        rendered_body = _compiled(body).render(variables)
    except (TemplateError, TypeError, ValueError, AttributeError) as exc:
        raise TemplateProblem(f"rendering failed: {exc}") from None
    # A subject is one header line: a newline in it would let data inject headers.
    one_line = " ".join(rendered_subject.split())
    return Rendered(subject=one_line[:998], body=rendered_body)
