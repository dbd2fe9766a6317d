"""A course grade from a student's posted grades: weighted categories, then a letter (no database here).

**Percent.** Each assignment counts as its percentage (``points / max_points``). Within a category
those percentages are averaged, weighted by each assignment's ``weight``; the course percent is the
mean of its categories' percentages weighted by the categories' ``weight`` (``grading_categories``),
over the categories that have at least one graded assignment (an empty category does not count as
zero: the grade is the grade so far). A course without categories is one category holding all its
assignments. In a course with categories, an assignment whose ``category`` names none of them
(or none at all) is left out, and counted as such, so that a typo cannot silently reweight the course.
Assignments worth no points (``max_points`` 0) cannot be a percentage and are left out too.

**Letter.** The first entry of the course's scale (highest ``min_percent`` first) whose
``min_percent`` the percent (rounded to two decimals) reaches; ``DEFAULT_LETTER_SCALE`` when the
course has none (``courses.letter_scale``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.errors import PermanentError

#: A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, else F.
DEFAULT_LETTER_SCALE: tuple[tuple[float, str], ...] = (
    (90.0, "A"),
    (80.0, "B"),
    (70.0, "C"),
    (60.0, "D"),
    (0.0, "F"),
)


class LetterScaleError(PermanentError):
    """A course's ``letter_scale`` is not a list of ``{"letter", "min_percent"}`` ending at 0 (a
    retry cannot help: the job is dead-lettered, to requeue once the course is fixed)."""


@dataclass(frozen=True)
class Scored:
    """One graded assignment of the student's."""

    category: str | None
    points: float
    max_points: float
    weight: float


@dataclass(frozen=True)
class CourseGradeResult:
    percent: float
    letter: str
    graded: int  # assignments that counted
    uncategorised: int  # left out: no (known) category in a course that has categories


def letter_scale(raw: Sequence[Mapping[str, Any]] | None) -> tuple[tuple[float, str], ...]:
    """The course's scale as ``(min_percent, letter)`` pairs, highest first; the default for None."""
    if raw is None:
        return DEFAULT_LETTER_SCALE
    try:
        scale = sorted(((float(entry["min_percent"]), str(entry["letter"])) for entry in raw), reverse=True)
    except (KeyError, TypeError, ValueError) as e:
        raise LetterScaleError(f"letter scale entries need a letter and a min_percent: {e}") from e
    if not scale or scale[-1][0] != 0:
        raise LetterScaleError("a letter scale must end with a letter at min_percent 0")
    if any(not 1 <= len(letter) <= 2 for _, letter in scale):
        raise LetterScaleError("letters are one or two characters (A, B+...)")
    return tuple(scale)


def letter_for(percent: float, scale: Iterable[tuple[float, str]]) -> str:
    value = round(percent, 2)
    for minimum, letter in scale:
        if value >= minimum:
            return letter
    raise LetterScaleError(f"no letter for {percent}%")


def course_grade(
    scores: Iterable[Scored], categories: Mapping[str, float], scale: Sequence[tuple[float, str]]
) -> CourseGradeResult | None:
    """The course grade of ``scores`` under ``categories`` (name: weight); None with nothing graded."""
    groups: dict[str | None, list[Scored]] = defaultdict(list)
    uncategorised = 0
    for score in scores:
        if score.max_points <= 0 or score.weight <= 0:
            continue
        if not categories:
            groups[None].append(score)
        elif score.category in categories:
            groups[score.category].append(score)
        else:
            uncategorised += 1
    if not groups:
        return None
    weighted = total = 0.0
    for name, members in groups.items():
        weight = 1.0 if name is None else categories[name]
        mean = sum(s.weight * s.points / s.max_points for s in members) / sum(s.weight for s in members)
        weighted += weight * mean
        total += weight
    percent = round(100.0 * weighted / total, 2)
    graded = sum(len(members) for members in groups.values())
    return CourseGradeResult(percent, letter_for(percent, scale), graded, uncategorised)
