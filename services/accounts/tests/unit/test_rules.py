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
