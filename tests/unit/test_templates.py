"""Email templates render strictly: a missing template or variable is a permanent error."""

from __future__ import annotations

import pytest

from actors.notifications.templates import (
    email_templates,
    push_templates,
    render_email,
    render_push,
    render_sms,
    sms_templates,
)
from contracts.errors import PermanentError, TemplateError


def test_welcome_renders_subject_text_and_escaped_html() -> None:
    rendered = render_email("welcome", {"name": "Ada <Lovelace>", "platform_name": "SkillCore"})
    assert rendered.subject == "Welcome to SkillCore, Ada <Lovelace>!"
    assert "Hello Ada <Lovelace>," in rendered.text
    assert "Ada &lt;Lovelace&gt;" in rendered.html


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(TemplateError, match="download_url"):
        render_email("report_ready", {"name": "Ada", "report_name": "Q1", "report_format": "pdf"})


def test_a_missing_template_is_permanent_and_lists_the_known_ones() -> None:
    with pytest.raises(PermanentError, match="welcome"):
        render_email("farewell", {"name": "Ada"})


def test_shipped_templates() -> None:
    assert {"welcome", "report_ready"} <= set(email_templates())


def test_sms_templates_render_to_one_short_line() -> None:
    text = render_sms(
        "report_ready",
        {"name": "Ada", "report_name": "Q1", "report_format": "csv", "download_url": "https://x.test/r"},
    )
    assert text == 'Ada, your report "Q1" (CSV) is ready: https://x.test/r'
    assert "\n" not in render_sms("welcome", {"name": "Ada"})


def test_an_sms_missing_a_variable_or_too_long_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="report_name"):
        render_sms("report_ready", {"name": "Ada"})
    with pytest.raises(TemplateError, match="over 320"):
        render_sms("emergency_alert", {"title": "Closure", "body": "x" * 400})
    with pytest.raises(TemplateError, match=r"known templates: .*report_ready, weekly_digest, welcome"):
        render_sms("nope", {})


def test_push_templates_render_a_title_and_a_body_cut_to_what_a_phone_shows() -> None:
    grade = {"course": "Algebra", "assignment": "Quiz 3", "score": 18, "max_score": 20}
    assert render_push("grade_posted", grade) == ("New grade in Algebra", "Quiz 3: 18/20")
    title, body = render_push("emergency_alert", {"title": "Closure " * 20, "body": "word " * 100})
    assert len(title) <= 65 and title.endswith("…")
    assert len(body) <= 240 and body.endswith("…")
    with pytest.raises(TemplateError, match="'course' is undefined"):
        render_push("grade_posted", {})


def test_every_template_renders_in_every_variant_with_html_escaped() -> None:
    samples: dict[str, dict[str, object]] = {
        "welcome": {},
        "report_ready": {"report_name": "Q1", "report_format": "pdf", "download_url": "https://x.test/r"},
        "emergency_alert": {"title": "Closed <today>", "body": "Snow & ice"},
        "grade_posted": {"course": "Algebra", "assignment": "Quiz 3", "score": 18, "max_score": 20},
        "iep_review_reminder": {"student_name": "Bo", "days_until_due": 60, "review_due_on": "2026-12-01"},
        "iep_created": {"student_name": "Bo", "starts_on": "2026-12-01", "review_due_on": "2027-03-01"},
        "attendance_intervention": {"student_name": "Bo", "absences": 3, "window_days": 7, "tier": 2},
        "inactive_student": {
            "days_inactive": 15,
            "last_active_on": None,
            "missed_assignments": [{"title": "Essay", "course": "Lit", "due_on": "2026-11-20"}],
        },
        "daily_grade_digest": {
            "date": "2026-11-20",
            "grades": [{"course": "Lit", "assignment": "Essay", "score": 8, "max_score": 10}],
        },
        "weekly_digest": {
            "week_start": "2026-11-16",
            "week_end": "2026-11-22",
            "items": [{"kind": "course", "summary": "Essay graded"}],
        },
    }
    assert sorted(samples) == email_templates() == sorted(sms_templates()) == sorted(push_templates())
    for name, context in samples.items():
        variables = {"name": "Ada", **context}
        email = render_email(name, variables)
        assert email.subject and email.text.strip() and "\n" not in email.subject
        assert render_sms(name, variables) and all(render_push(name, variables))
    assert (
        "Closed &lt;today&gt;"
        in render_email("emergency_alert", {"name": "A", **samples["emergency_alert"]}).html
    )


def test_digest_templates_list_every_event_and_stay_within_an_sms() -> None:
    weekly = {
        "name": "Ada",
        "week_start": "2026-11-16",
        "week_end": "2026-11-22",
        "items": [{"kind": "assignment", "summary": f"Essay {n} due " + "x" * 80} for n in range(6)],
    }
    email = render_email("weekly_digest", weekly)
    assert email.subject == "Your week: 6 updates (2026-11-16 to 2026-11-22)"
    assert all(f"Essay {n} due" in email.text for n in range(6))
    assert len(render_sms("weekly_digest", weekly)) <= 320
    quiz = {"course": "Algebra", "assignment": "Quiz", "score": 9, "max_score": 10}
    grades = {"name": "Ada", "date": "2026-11-20", "grades": [quiz]}
    assert render_email("daily_grade_digest", grades).subject == "1 new grade on 2026-11-20"
    assert render_push("daily_grade_digest", grades) == ("1 new grade(s)", "Algebra: 9/10.")
