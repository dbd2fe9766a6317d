"""Every crontab entry names an actor the workers declare, with arguments its contract accepts."""

from __future__ import annotations

import dramatiq

import actors  # noqa: F401  (declares every actor on the test process's broker)
from contracts.events import HANDLERS
from contracts.registry import all_contracts, get_contract
from schedules.crontab import CRONTAB


def test_every_crontab_actor_is_declared_and_its_arguments_are_valid() -> None:
    broker = dramatiq.get_broker()
    for entry in CRONTAB:
        declared = broker.get_actor(entry.actor)
        assert declared.queue_name == get_contract(entry.actor).queue, entry.name
        get_contract(entry.actor).validate(entry.payload)


def test_every_contract_has_an_actor_and_every_actor_a_contract() -> None:
    broker = dramatiq.get_broker()
    declared = {name for name in broker.get_declared_actors() if not name.startswith("testing.")}
    # (event handlers have event contracts instead: contracts.events)
    assert set(all_contracts()) == declared - set(HANDLERS)


def test_the_crontab_holds_the_documented_jobs() -> None:
    by_time = {(entry.cron, entry.actor) for entry in CRONTAB}
    assert {actor for cron, actor in by_time if cron == "0 2 * * *"} == {
        "maintenance.run_cleanup",
        "academics.detect_attendance_interventions",
        "academics.roll_up_attendance",
        "maintenance.backup_database",
    }
    assert ("0 8 * * *", "academics.send_iep_review_reminders") in by_time
    assert ("0 7 * * mon-fri", "academics.send_grade_posting_digest") in by_time
    assert {a for c, a in by_time if c == "0 3 * * sun"} == {
        "academics.compute_performance_trends",
        "academics.compute_resource_usage",
    }
    assert ("0 9 * * sun", "academics.notify_inactive_users") in by_time
    assert ("0 17 * * sun", "notifications.send_weekly_digests") in by_time
    assert {a for c, a in by_time if c == "0 4 1 * *"} == {
        "reports.generate_compliance_audit",
        "maintenance.archive_old_data",
    }
    assert ("0 5 1 * *", "reports.generate_system_health_summary") in by_time
