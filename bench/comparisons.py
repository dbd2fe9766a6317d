"""The registered comparisons, in the order ``python -m bench`` runs them.

Add a comparison by writing a module that exposes ``COMPARISON`` and listing it here.
"""

from __future__ import annotations

from bench import breaker, enqueue, throughput
from bench.harness import Comparison

COMPARISONS: tuple[Comparison, ...] = (throughput.COMPARISON, enqueue.COMPARISON, breaker.COMPARISON)


def get_comparison(name: str) -> Comparison:
    """Return the comparison called ``name``, or raise ``KeyError`` listing the known ones."""
    for comparison in COMPARISONS:
        if comparison.name == name:
            return comparison
    known = ", ".join(c.name for c in COMPARISONS)
    raise KeyError(f"unknown comparison {name!r}; known: {known}")
