import pytest

from accounts.domain.rules import (
    StepState,
    address_key,
    disconnect_progress,
    normalise_colour,
)
from backhaul_kit.errors import InvalidInput


@pytest.mark.parametrize(
    ("given", "stored"),
    [("#4caf50", "#4CAF50"), ("#abc", "#AABBCC"), (" teal ", "teal"), ("Blue-Grey", "blue-grey")],
)
def test_colours_are_hex_or_picker_names(given, stored):
    assert normalise_colour(given) == stored


@pytest.mark.parametrize("bad", ["#12345", "4CAF50", "#GGGGGG", "ultraviolet", ""])
def test_malformed_colours_are_refused_with_the_value_named(bad):
    with pytest.raises(InvalidInput, match="colour"):
        normalise_colour(bad)


def test_progress_is_complete_only_when_no_step_is_pending():
    assert disconnect_progress([StepState.DONE, StepState.PENDING]) == "in_progress"
    assert disconnect_progress([StepState.DONE, StepState.SKIPPED]) == "complete"
    assert disconnect_progress([StepState.DONE, StepState.FAILED]) == "failed"


def test_the_same_address_spelt_differently_is_one_address():
    assert address_key("1  Main St", "Springfield", "12345", "US") == address_key(
        "1 main st", "SPRINGFIELD", "12345", "us"
    )
    assert address_key("1 Main St", "Springfield", None, "US") != address_key(
        "2 Main St", "Springfield", None, "US"
    )


def test_a_parent_chain_that_leads_back_to_the_child_is_a_cycle():
    from accounts.domain.rules import creates_cycle

    assert creates_cycle(1, 1, {})
    assert creates_cycle(1, 3, {3: 2, 2: 1})
    assert not creates_cycle(1, 3, {3: 2, 2: None})


def test_the_header_shows_no_groups_when_there_are_none():
    from accounts.domain.rules import groups_label

    assert groups_label([]) == "[No Groups]"
    assert groups_label(["Fibre", "Business"]) == "Business, Fibre"
