"""The course grade rules (``actors.academics.grading``): weighted categories, letters, what is left out."""

from __future__ import annotations

import pytest

from actors.academics.grading import (
    DEFAULT_LETTER_SCALE,
    LetterScaleError,
    Scored,
    course_grade,
    letter_for,
    letter_scale,
)
from contracts.errors import PermanentError


def test_categories_weigh_their_mean_percentages_and_empty_ones_do_not_count() -> None:
    scores = [
        Scored("homework", 8, 10, 1),  # 80%
        Scored("homework", 20, 20, 1),  # 100% -> homework 90%
        Scored("exams", 35, 50, 1),  # exams 70%
    ]
    result = course_grade(scores, {"homework": 25, "exams": 75, "projects": 50}, DEFAULT_LETTER_SCALE)
    assert result is not None
    assert (result.percent, result.letter, result.graded, result.uncategorised) == (75.0, "C", 3, 0)


def test_assignment_weights_count_within_a_category_and_unknown_categories_are_left_out() -> None:
    scores = [
        Scored("labs", 10, 10, 3),
        Scored("labs", 0, 10, 1),
        Scored(None, 0, 10, 1),
        Scored("Labs", 0, 1, 1),
    ]
    result = course_grade(scores, {"labs": 1}, DEFAULT_LETTER_SCALE)
    assert result is not None and (result.percent, result.uncategorised) == (75.0, 2)


def test_without_categories_every_assignment_counts_and_nothing_graded_is_no_grade() -> None:
    result = course_grade([Scored(None, 45, 50, 1), Scored("anything", 0, 0, 1)], {}, DEFAULT_LETTER_SCALE)
    assert result is not None and (result.percent, result.letter, result.graded) == (90.0, "A", 1)
    assert course_grade([], {}, DEFAULT_LETTER_SCALE) is None
    assert course_grade([Scored("x", 5, 10, 1)], {"y": 1}, DEFAULT_LETTER_SCALE) is None


def test_letters_come_from_the_highest_minimum_reached_after_rounding() -> None:
    assert [letter_for(p, DEFAULT_LETTER_SCALE) for p in (100, 90, 89.999, 89.99, 80, 60, 59.99, 0)] == [
        "A", "A", "A", "B", "B", "D", "F", "F",
    ]  # fmt: skip
    scale = letter_scale([{"letter": "NP", "min_percent": 0}, {"letter": "P", "min_percent": 70}])
    assert scale == ((70.0, "P"), (0.0, "NP")) and letter_for(69.5, scale) == "NP"
    assert letter_scale(None) == DEFAULT_LETTER_SCALE


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"letter": "A", "min_percent": 50}], "min_percent 0"),
        ([], "min_percent 0"),
        ([{"letter": "A"}], "need a letter and a min_percent"),
        ([{"letter": "A", "min_percent": "high"}], "need a letter and a min_percent"),
        ([{"letter": "ABC", "min_percent": 0}], "one or two characters"),
    ],
)
def test_an_invalid_scale_is_a_permanent_error(raw: list[dict[str, object]], message: str) -> None:
    with pytest.raises(LetterScaleError, match=message) as caught:
        letter_scale(raw)
    assert isinstance(caught.value, PermanentError)
