"""Message contracts: what each actor accepts, importable without dramatiq or heavy dependencies.

Each domain module registers its pydantic models with ``contracts.registry.register``; importing this
package loads them all.
"""

from __future__ import annotations

# Importing the domain modules registers their contracts.
from contracts import academics, events, maintenance, media, notifications, reports  # noqa: F401
from contracts.errors import ContractError, UnknownActorError
from contracts.registry import ActorContract, Contract, all_contracts, get_contract

__all__ = [
    "ActorContract",
    "Contract",
    "ContractError",
    "UnknownActorError",
    "all_contracts",
    "get_contract",
]
