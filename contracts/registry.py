"""The registry of message contracts: one pydantic model per actor, keyed by actor name.

A contract also names the actor's queue and default priority, so that a producer can publish
without importing any actor code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from contracts.errors import ContractError, UnknownActorError
from contracts.priorities import PRIORITIES


class Contract(BaseModel):
    """Base class of every message contract: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ActorContract:
    """What a producer needs to know of an actor."""

    actor_name: str
    queue: str
    priority: str
    model: type[Contract]

    def validate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Return the payload as JSON-safe keyword arguments, or raise ``ContractError``."""
        try:
            return self.model.model_validate(dict(payload)).model_dump(mode="json")
        except ValidationError as e:
            raise ContractError(describe_validation_error(self.actor_name, e)) from None


_CONTRACTS: dict[str, ActorContract] = {}
C = TypeVar("C", bound=type[Contract])


def register(actor_name: str, *, queue: str, priority: str = "normal") -> Callable[[C], C]:
    """Register a contract model under an actor name (a class decorator)."""
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r} for {actor_name}")

    def decorator(model: C) -> C:
        if actor_name in _CONTRACTS:
            raise ValueError(f"a contract is already registered for {actor_name}")
        _CONTRACTS[actor_name] = ActorContract(actor_name, queue, priority, model)
        return model

    return decorator


def get_contract(actor_name: str) -> ActorContract:
    """Return the contract of an actor, or raise ``UnknownActorError`` listing the known ones."""
    _load_all()
    try:
        return _CONTRACTS[actor_name]
    except KeyError:
        known = ", ".join(sorted(_CONTRACTS)) or "none"
        raise UnknownActorError(f"unknown actor {actor_name!r}; known actors: {known}") from None


def all_contracts() -> dict[str, ActorContract]:
    """Return every registered contract, by actor name."""
    _load_all()
    return dict(sorted(_CONTRACTS.items()))


def describe_validation_error(actor_name: str, error: ValidationError) -> str:
    """Turn a pydantic error into one line per bad field, naming the field."""
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(payload)"
        problems.append(f"{field}: {item['msg']}")
    return f"invalid payload for {actor_name}: " + "; ".join(problems)


def _load_all() -> None:
    # Importing the package registers every domain's contracts.
    import contracts  # noqa: F401
