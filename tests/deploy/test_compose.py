"""``deploy/compose.yaml``: valid under the Compose specification's JSON Schema (vendored in
``deploy/schemas``), every file it mounts exists, every ``EDUJOBS_`` variable is a setting, and every
edujobs service's command runs, with its environment from compose.yaml, against the local services
(there is no Docker engine here): one-shot ones exit 0, long-running ones become healthy and stop on
SIGTERM. A wrong command, flag or variable name fails here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import redis

from brokers.settings import ENV_PREFIX, Settings
from tests.deploy.compose import DEPLOY, edujobs_services, load, read_env_file
from tests.processes import free_port, listening, terminate
from tests.services import MANAGEMENT_URL, postgres_database, rabbitmq_vhost, require

pytestmark = pytest.mark.deploy

SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
BIN = Path(sys.executable).parent


def test_compose_yaml_is_valid_under_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(load()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    broken = load()
    broken["services"]["api"]["comand"] = ["edujobs", "api"]
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_secret_comes_from_the_env_file_and_is_required() -> None:
    # Without the env file, compose refuses to start instead of running with empty secrets.
    from tests.deploy.compose import InterpolationError

    with pytest.raises(InterpolationError, match=r"POSTGRES_PASSWORD|RABBITMQ_|EDUJOBS_SIGNING_KEY"):
        load(env={})
    assert "deploy/.env" in (DEPLOY.parent / ".gitignore").read_text().splitlines()


def test_every_mounted_file_exists() -> None:
    for name, service in load()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_every_edujobs_variable_is_a_setting() -> None:
    unknown = {
        (name, variable)
        for name, service in edujobs_services(load()).items()
        for variable in service.get("environment", {})
        if variable.startswith(ENV_PREFIX) and variable not in SETTINGS
    }
    assert not unknown, f"not settings of brokers/settings.py: {sorted(unknown)}"
    env_example = {v for v in read_env_file(DEPLOY / ".env.example") if v.startswith(ENV_PREFIX)}
    assert env_example <= SETTINGS, env_example - SETTINGS


def test_the_pools_and_services_the_deployment_promises() -> None:
    services = load()["services"]
    edujobs = edujobs_services(load())
    commands = {name: service["command"] for name, service in edujobs.items()}
    queues: list[str] = []
    for command in commands.values():
        if command[:2] == ["dramatiq", "actors"]:
            queues += command[command.index("--queues") + 1 : command.index("--processes")]
    from brokers.topology import ALL_QUEUES

    assert sorted(queues) == sorted(ALL_QUEUES)  # every queue has exactly one pool
    assert sum(c == ["edujobs", "scheduler"] for c in commands.values()) == 2
    for name in ("rabbitmq", "postgres", "redis", "prometheus", "grafana", "api", "migrate"):
        assert name in services
    for name, service in edujobs.items():
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


# -- smoke: each service's command with its environment, on the local services -------------------


def local_environment(
    service: dict[str, Any], amqp_url: str, database_url: str, work: Path
) -> dict[str, str]:
    """The service's environment with compose's hosts replaced by this test's local services (and
    its own vhost and database), listening ports by free ones, container paths by temporary ones."""
    env = {key: str(value) for key, value in service.get("environment", {}).items()}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        host = urllib.parse.urlsplit(value).hostname if "://" in value else None
        if key == "EDUJOBS_RABBITMQ_URL":
            assert host == "rabbitmq" and value.startswith("amqp://"), value
            env[key] = amqp_url
        elif key == "EDUJOBS_RABBITMQ_MANAGEMENT_URL":
            assert host == "rabbitmq" and value.startswith("http://"), value
            env[key] = MANAGEMENT_URL.replace("://", "://guest:guest@")
        elif key == "EDUJOBS_DATABASE_URL":
            assert host == "postgres" and value.startswith("postgresql://"), value
            env[key] = database_url
        elif key == "EDUJOBS_REDIS_URL":
            assert host == "redis", value
            env[key] = value.replace("redis:6379", "127.0.0.1:6379")
        elif key.endswith("_HOST") and value == "0.0.0.0":
            env[key] = "127.0.0.1"
        elif key.endswith("_PORT") and value.isdigit() and value != "0":
            env[key] = str(free_port())
        elif value.startswith("file:/") or value.startswith("/tmp/"):
            path = work / value.split(":", 1)[-1].strip("/").replace("/", "_")
            path.mkdir(exist_ok=True)
            env[key] = ("file:" if value.startswith("file:") else "") + str(path)
    return env


class ServiceProcess:
    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = cwd / f"{name}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "dramatiq_worker_timeout": "100",
            **env,
        }
        self._out = self.log.open("wb")
        self.process = subprocess.Popen(
            command, env=self.env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, check: Any, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output()[-4000:]}"
                )
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: {what} not within {timeout}s:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        code = terminate(self.process)
        self._out.close()
        return code


def healthy(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # the image's HEALTHCHECK, with the service's own environment
    full = {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}, **env}
    return subprocess.run(
        [str(BIN / "edujobs"), "health"], env=full, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A vhost and database of the module's, prepared as compose does before any other service starts:
    by the migrate service's own command (its test runs it once more: it must be repeatable)."""
    require("Redis", "127.0.0.1", 6379)
    with rabbitmq_vhost() as amqp_url, postgres_database() as database_url:
        work = tmp_path_factory.mktemp("migrate")
        migrate = edujobs_services(load())["migrate"]
        env = local_environment(migrate, amqp_url, database_url, work)
        process = ServiceProcess("migrate", [str(part) for part in migrate["command"]], env, work)
        code = process.process.wait(180)
        process.stop()
        assert code == 0, process.output()[-4000:]
        yield amqp_url, database_url


SERVICES = sorted(edujobs_services(load()))


@pytest.mark.parametrize("name", SERVICES)
def test_the_service_runs_with_its_compose_command_and_environment(
    name: str, local_services: tuple[str, str], tmp_path: Path
) -> None:
    amqp_url, database_url = local_services
    service = edujobs_services(load())[name]
    env = local_environment(service, amqp_url, database_url, tmp_path)
    command = [str(part) for part in service["command"]]
    process = ServiceProcess(name, command, env, tmp_path)
    try:
        if service.get("restart") == "no":
            # one shot: must succeed
            code = process.process.wait(180)
            assert code == 0, process.output()[-4000:]
            return
        if command[0] == "dramatiq":  # a worker pool
            processes = int(command[command.index("--processes") + 1])
            process.wait_until(
                lambda: process.output().count("Worker process is ready for action.") >= processes,
                "every worker process ready",
            )
            port = int(env["EDUJOBS_METRICS_PORT"])
            process.wait_until(lambda: listening(port), f"metrics on {port}")
            assert "edujobs_queue_messages" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        elif "EDUJOBS_SCHEDULER_METRICS_PORT" in service["environment"]:  # a scheduler
            port = int(env["EDUJOBS_SCHEDULER_METRICS_PORT"])
            process.wait_until(lambda: listening(port), f"scheduler metrics on {port}")
        elif "EDUJOBS_API_PORT" in service["environment"]:  # the API
            port = int(env["EDUJOBS_API_PORT"])
            process.wait_until(lambda: listening(port), f"API on {port}")
            assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        else:
            raise AssertionError(f"{name}: no smoke check for {command}")
        checked = healthy(env, tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        code = process.stop()
    # uvicorn re-raises SIGTERM once it has shut down gracefully: -15 is a clean stop as well
    assert code in (0, -signal.SIGTERM), f"{name} exited with {code} on SIGTERM:\n{process.output()[-4000:]}"
    redis.Redis().ping()
