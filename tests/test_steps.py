"""Step splitting: lossless, never an empty or blank-only step (unless the text is only blank)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dapo.core.steps import join_steps, split_steps, state_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        ("a\nb", ["a\n", "b"]),
        ("a\nb\n", ["a\n", "b\n"]),
        ("a\n\nb", ["a\n", "\nb"]),  # the blank line joins the step after it
        ("a\n  \n\nb\nc", ["a\n", "  \n\nb\n", "c"]),  # whitespace-only lines are blank too
        ("a\n\n", ["a\n\n"]),  # trailing blank lines join the last step
        ("\n\n", ["\n\n"]),  # nothing but blank: one step, so the text is not lost
        ("\na", ["\na"]),
    ],
)
def test_split_literal(text, expected):
    assert split_steps(text) == expected


def test_multi_character_delimiter():
    # the blank "\n\n" between y=2 and z joins the step after it, as single newlines do
    assert split_steps("x=1\n\ny=2\n\n\n\nz", "\n\n") == ["x=1\n\n", "y=2\n\n", "\n\nz"]


def test_empty_delimiter_rejected():
    with pytest.raises(ValueError, match="delimiter"):
        split_steps("abc", "")


_alphabet = st.sampled_from(["\n", "\n", " ", "a", "b", "é", "→", "\t", "\r", "😀", "\n\n"])


@given(st.lists(_alphabet, max_size=40).map("".join), st.sampled_from(["\n", "\n\n", "||"]))
def test_round_trip_and_no_blank_steps(text, delimiter):
    steps = split_steps(text, delimiter)
    assert join_steps(steps) == text
    assert all(steps)
    if len(steps) > 1:
        assert all(step.replace(delimiter, "").strip() for step in steps)
    assert all(delimiter in step for step in steps[:-1])


@given(st.text(max_size=60))
def test_round_trip_any_unicode(text):
    assert join_steps(split_steps(text)) == text


def test_state_text():
    steps = ["1+1=2\n", "2*3=6\n", "Answer: 6"]
    assert state_text("Q\n", steps, 0) == "Q\n"
    assert state_text("Q\n", steps, 2) == "Q\n1+1=2\n2*3=6\n"
    with pytest.raises(ValueError, match="outside"):
        state_text("Q\n", steps, 4)
