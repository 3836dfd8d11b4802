"""The scheduler's rules, with the clock in the test's hands."""

from datetime import UTC, datetime, timedelta

import pytest

from backhaul_contracts.common import ServiceKind
from backhaul_kit.errors import Conflict, InvalidInput
from scheduler.domain import rules
from scheduler.domain.rules import Action, PlannedChange, State, VacationState

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


# -- time ------------------------------------------------------------------------------------


def test_an_offset_wins_over_the_time_zone():
    run_at, warnings = rules.resolve_run_at(
        datetime.fromisoformat("2030-06-02T09:00:00+02:00"), "America/Chicago"
    )
    assert run_at == datetime(2030, 6, 2, 7, 0, tzinfo=UTC)
    assert warnings == []


def test_a_local_time_is_read_in_its_time_zone_across_daylight_saving():
    summer, _ = rules.resolve_run_at(datetime(2030, 7, 1, 9, 0), "Europe/Paris")
    winter, _ = rules.resolve_run_at(datetime(2030, 1, 1, 9, 0), "Europe/Paris")
    assert summer == datetime(2030, 7, 1, 7, 0, tzinfo=UTC)
    assert winter == datetime(2030, 1, 1, 8, 0, tzinfo=UTC)


def test_a_time_without_offset_or_zone_is_utc_with_a_warning():
    run_at, warnings = rules.resolve_run_at(datetime(2030, 7, 1, 9, 0), None)
    assert run_at == datetime(2030, 7, 1, 9, 0, tzinfo=UTC)
    assert "read as UTC" in warnings[0]


def test_a_skipped_local_time_is_refused():
    with pytest.raises(InvalidInput, match="daylight-saving gap"):
        rules.resolve_run_at(datetime(2030, 3, 31, 2, 30), "Europe/Paris")


@pytest.mark.parametrize("bad", ["Mars/Olympus", "Europe/", "../etc/passwd", "not a zone"])
def test_malformed_time_zones_are_refused_by_name(bad):
    with pytest.raises(InvalidInput, match="time zone"):
        rules.resolve_run_at(datetime(2030, 7, 1, 9, 0), bad)


def test_the_time_must_be_in_the_future():
    rules.ensure_future(NOW + timedelta(milliseconds=1), NOW)
    for past in (NOW, NOW - timedelta(days=1)):
        with pytest.raises(InvalidInput, match="in the past"):
            rules.ensure_future(past, NOW)


def test_an_answer_is_overdue_only_after_the_timeout():
    timeout = timedelta(minutes=10)
    dispatched = NOW
    assert not rules.answer_overdue(dispatched, NOW + timedelta(minutes=9, seconds=59), timeout)
    assert rules.answer_overdue(dispatched, NOW + timedelta(minutes=10), timeout)


# -- parameters and states -------------------------------------------------------------------


def test_parameters_are_checked_per_action_and_named_when_wrong():
    parsed = rules.parse_parameters(Action.ADD_SERVICE, {"service_id": 3, "price_override": "9.5"})
    assert rules.stored_parameters(parsed) == {
        "service_id": 3,
        "quantity": 1,
        "price_override": "9.5",
    }
    assert rules.stored_parameters(rules.parse_parameters(Action.DISCONNECT, {})) == {
        "proration": "inherit"
    }
    with pytest.raises(InvalidInput, match=r"parameters\.status_id"):
        rules.parse_parameters(Action.CHANGE_STATUS, {})
    with pytest.raises(InvalidInput, match=r"parameters\.proration"):
        rules.parse_parameters(Action.DISCONNECT, {"proration": "half"})
    with pytest.raises(InvalidInput, match=r"parameters\.quantity"):
        rules.parse_parameters(Action.ADD_SERVICE, {"service_id": 3, "quantity": 0})


@pytest.mark.parametrize("state", [s for s in State if s is not State.PENDING])
def test_only_pending_events_can_change(state):
    rules.ensure_pending(State.PENDING, "e1", "edited")
    with pytest.raises(Conflict, match=f"e1 is {state.value}"):
        rules.ensure_pending(state, "e1", "edited")


def test_answers_close_dispatched_events_and_correct_a_no_answer_failure():
    assert rules.accepts_answer(State.DISPATCHED, None)
    assert rules.accepts_answer(State.FAILED, rules.NO_ANSWER)
    assert not rules.accepts_answer(State.FAILED, "conflict")
    assert not rules.accepts_answer(State.COMPLETED, None)
    assert not rules.accepts_answer(State.CANCELLED, None)
    assert not rules.accepts_answer(State.PENDING, None)


# -- foresight -------------------------------------------------------------------------------

KINDS = {10: ServiceKind.DATA, 11: ServiceKind.DATA, 20: ServiceKind.RECURRING}
NAMES = {10: "Fiber 100", 11: "Vacation 1M", 20: "TV"}


def foresee(action, service_id, present, planned=()):
    return rules.foresee_failures(
        account_id=7,
        action=action,
        parameters=rules.parse_parameters(action, {"service_id": service_id}),
        run_at=NOW,
        present=present,
        planned_before=list(planned),
        kinds=KINDS,
        names=NAMES,
    )


def test_adding_a_data_service_while_one_stays_is_foreseen_to_fail():
    (warning,) = foresee(Action.ADD_SERVICE, 11, [10, 20])
    assert "'Fiber 100' (10)" in warning and "'Vacation 1M' (11)" in warning
    assert "schedule its removal first" in warning


def test_a_removal_scheduled_before_clears_the_warning():
    assert foresee(Action.ADD_SERVICE, 11, [10], [PlannedChange(Action.REMOVE_SERVICE, 10)]) == []


def test_an_add_scheduled_before_counts_as_present():
    warnings = foresee(Action.ADD_SERVICE, 11, [], [PlannedChange(Action.ADD_SERVICE, 10)])
    assert len(warnings) == 1


def test_non_data_services_do_not_conflict():
    assert foresee(Action.ADD_SERVICE, 20, [10]) == []
    assert foresee(Action.ADD_SERVICE, 11, [20]) == []


def test_an_unknown_service_gets_a_conditional_warning():
    (warning,) = foresee(Action.ADD_SERVICE, 99, [10])
    assert "if service 99 is a data service" in warning


def test_removing_a_service_that_will_not_be_there_is_foreseen_to_fail():
    (warning,) = foresee(Action.REMOVE_SERVICE, 11, [10])
    assert "will not be on account 7" in warning
    assert foresee(Action.REMOVE_SERVICE, 11, [], [PlannedChange(Action.ADD_SERVICE, 11)]) == []


def test_other_actions_have_nothing_to_foresee():
    assert (
        rules.foresee_failures(
            account_id=7,
            action=Action.DISCONNECT,
            parameters=rules.DisconnectParameters(),
            run_at=NOW,
            present=[10],
            planned_before=[],
            kinds=KINDS,
            names=NAMES,
        )
        == []
    )


# -- vacations -------------------------------------------------------------------------------

LEAVE = NOW + timedelta(days=3)
BACK = NOW + timedelta(days=17)


def plan(**overrides):
    given = {
        "leave_at": LEAVE,
        "return_at": BACK,
        "vacation_status_id": 9,
        "vacation_service_id": 11,
        "normal_status_id": 2,
        "normal_service_id": 10,
        "now": NOW,
        **overrides,
    }
    return rules.vacation_plan(**given)


def test_a_vacation_swaps_status_and_data_service_removing_before_adding_on_both_dates():
    steps = [
        (p.run_at, p.sequence, p.action, rules.stored_parameters(p.parameters)) for p in plan()
    ]
    assert steps == [
        (LEAVE, 0, Action.CHANGE_STATUS, {"status_id": 9, "reason": "vacation"}),
        (LEAVE, 1, Action.REMOVE_SERVICE, {"service_id": 10}),
        (LEAVE, 2, Action.ADD_SERVICE, {"service_id": 11, "quantity": 1, "price_override": None}),
        (BACK, 0, Action.CHANGE_STATUS, {"status_id": 2, "reason": "back from vacation"}),
        (BACK, 1, Action.REMOVE_SERVICE, {"service_id": 11}),
        (BACK, 2, Action.ADD_SERVICE, {"service_id": 10, "quantity": 1, "price_override": None}),
    ]


def test_a_vacation_without_a_normal_data_service_only_adds_and_removes_the_vacation_one():
    actions = [(p.run_at, p.action) for p in plan(normal_service_id=None)]
    assert actions == [
        (LEAVE, Action.CHANGE_STATUS),
        (LEAVE, Action.ADD_SERVICE),
        (BACK, Action.CHANGE_STATUS),
        (BACK, Action.REMOVE_SERVICE),
    ]


def test_the_linked_set_leaves_no_warning_when_planned_in_order():
    present = [10]
    planned: list[PlannedChange] = []
    for step in plan():
        assert (
            rules.foresee_failures(
                account_id=7,
                action=step.action,
                parameters=step.parameters,
                run_at=step.run_at,
                present=present,
                planned_before=planned,
                kinds=KINDS,
                names=NAMES,
            )
            == []
        )
        if step.action in (Action.ADD_SERVICE, Action.REMOVE_SERVICE):
            planned.append(PlannedChange(step.action, step.parameters.service_id))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"leave_at": NOW - timedelta(hours=1)}, "in the past"),
        ({"return_at": LEAVE}, "must be after the leave"),
        ({"vacation_status_id": 2}, "both 2"),
        ({"vacation_service_id": 10}, "both 10"),
    ],
)
def test_impossible_vacations_are_refused(overrides, words):
    with pytest.raises(InvalidInput, match=words):
        plan(**overrides)


def test_a_vacation_is_shown_as_one():
    p, d, c, f, x = State.PENDING, State.DISPATCHED, State.COMPLETED, State.FAILED, State.CANCELLED
    assert rules.vacation_state([p, p, p]) is VacationState.SCHEDULED
    assert rules.vacation_state([c, d, p]) is VacationState.IN_PROGRESS
    assert rules.vacation_state([c, c, c]) is VacationState.COMPLETED
    assert rules.vacation_state([c, f, p]) is VacationState.FAILED
    assert rules.vacation_state([x, x, x]) is VacationState.CANCELLED


def test_a_disconnect_scheduled_before_is_foreseen():
    assert rules.foresee_disconnect(7, Action.DISCONNECT, None) == []
    (second,) = rules.foresee_disconnect(7, Action.DISCONNECT, NOW)
    assert "a second disconnect will fail" in second
    (after,) = rules.foresee_disconnect(7, Action.ADD_SERVICE, NOW)
    assert "run on a disconnected account" in after


def test_a_parents_disconnect_names_the_children_it_leaves():
    assert rules.foresee_children(1, []) == []
    (warning,) = rules.foresee_children(1, [2, 3])
    assert "child account(s) 2, 3" in warning
