"""Template checks at configuration time, and sandboxed rendering."""

import pytest

from notifications.domain.templates import TemplateProblem, check, render

FIELDS = {"account_id", "status", "previous_status", "reason"}


def test_a_good_template_passes_and_renders():
    source = "Hi {{ contact.name }}, {{ account.name }} is now {{ event.status.name }}"
    check(source, event_fields=FIELDS, what="body_template")
    rendered = render(
        "Status of {{ account.name }}",
        source,
        {
            "account": {"id": 1, "name": "Acme", "parent_account_id": None},
            "contact": {"name": "Ada", "email": "ada@example.com"},
            "event": {"status": {"name": "Vacation"}},
        },
    )
    assert rendered.subject == "Status of Acme"
    assert rendered.body == "Hi Ada, Acme is now Vacation"


def test_a_template_that_does_not_compile_is_named_with_its_line():
    with pytest.raises(TemplateProblem, match=r"subject_template does not compile \(line 1\)"):
        check("{{ account.name ", event_fields=FIELDS, what="subject_template")


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{{ customer }}", "'customer'"),
        ("{{ event.colour }}", "'event.colour'"),
        ("{{ account['balance'] }}", "'account.balance'"),
        ("{{ contact.phone }}", "'contact.phone'"),
    ],
)
def test_an_unknown_variable_is_named(source, named):
    with pytest.raises(TemplateProblem, match=f"unknown variable {named}"):
        check(source, event_fields=FIELDS, what="body_template")


def test_loop_variables_and_filters_are_not_unknown():
    check(
        "{% for k in event.status %}{{ k | upper }}{{ loop.index }}{% endfor %}{{ range(2) }}",
        event_fields=FIELDS,
        what="body_template",
    )


def test_the_sandbox_refuses_unsafe_access():
    with pytest.raises(TemplateProblem, match="rendering failed"):
        render("x", "{{ event.__class__.__mro__ }}", {"event": {}})


def test_missing_data_fails_loudly_and_subject_is_one_line():
    with pytest.raises(TemplateProblem):
        render("x", "{{ event.status.name }}", {"event": {"status": None}})
    rendered = render("a\r\nBcc: victim@example.com", "", {})
    assert "\n" not in rendered.subject and "\r" not in rendered.subject
