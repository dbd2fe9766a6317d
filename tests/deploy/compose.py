"""Reading ``deploy/compose.yaml`` the way Docker Compose does: YAML (merge keys included), then
``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` interpolated from an env file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?|-|\?)(?P<arg>[^}]*))?\}")


class InterpolationError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            if not sep:
                raise InterpolationError(f"{path.name}: not NAME=value: {line!r}")
            env[name.strip()] = value.strip()
    return env


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        if op in (":-", "-"):
            return given if given or (op == "-" and given is not None) else arg
        if op in (":?", "?"):
            if given is None or (op == ":?" and not given):
                raise InterpolationError(f"{name}: {arg}")
            return given
        return given or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml as Compose sees it with ``env`` (default: .env.example's values)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    data = interpolate(raw, read_env_file(ENV_EXAMPLE) if env is None else env)
    assert isinstance(data, dict)
    # x- extension fields are for anchors only
    return {key: value for key, value in data.items() if not key.startswith("x-")}


def edujobs_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the edujobs image."""
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).split(":")[0] == "edujobs"
    }
