"""The Node client's canonical JSON (clients/node/lib/canonical.js) is byte for byte Python's, on
random JSON (hypothesis): the signatures of the two clients cannot drift apart.

Runs ``node`` as a subprocess (no npm packages needed); without node it skips locally and fails in
CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.signing import MAX_SAFE_INTEGER, SignatureError, canonical_json
from tests.unit.test_signing import json_values

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "node" / "test" / "canonical-lines.mjs"


class NodeCanonical:
    def __init__(self, node: str) -> None:
        self.process = subprocess.Popen(
            [node, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )

    def __call__(self, value: Any) -> str | dict[str, str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(value) + "\n")
        self.process.stdin.flush()
        answer: str | dict[str, str] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def node_canonical() -> Iterator[NodeCanonical]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed (CI installs it: see .ci/run)")
        pytest.skip("node is not installed")
    canonical = NodeCanonical(node)
    yield canonical
    canonical.close()


def _numbers_node_must_refuse(value: Any) -> bool:
    """Whether ``value`` holds a float that is a whole number past 2^53 - 1 and below 1e21: a
    JavaScript number cannot say it is a float, and JSON.stringify would write it as an integer
    the worker refuses, so the Node client refuses it (docs/wire-format.md)."""
    if isinstance(value, float):
        return value.is_integer() and MAX_SAFE_INTEGER < abs(value) < 1e21
    if isinstance(value, dict):
        return any(_numbers_node_must_refuse(v) for v in value.values())
    if isinstance(value, list):
        return any(_numbers_node_must_refuse(v) for v in value)
    return False


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(), json_values, max_size=6))
def test_node_canonical_json_is_pythons(node_canonical: NodeCanonical, value: dict[str, Any]) -> None:
    answer = node_canonical(value)
    if _numbers_node_must_refuse(value):
        assert isinstance(answer, dict) and "past 2^53 - 1" in answer["refused"]
        return
    try:
        expected = canonical_json(value).decode()
    except SignatureError:  # a lone surrogate (st.text() may draw one): both refuse
        assert isinstance(answer, dict), answer
        return
    assert answer == expected


@pytest.mark.parametrize(
    "value",
    [
        {"k": 9007199254740992},
        {"k": [-9007199254740993]},
        {"s": "\ud800"},
        {"\udfff": 1},
    ],
)
def test_node_refuses_what_python_refuses(node_canonical: NodeCanonical, value: dict[str, Any]) -> None:
    answer = node_canonical(value)
    assert isinstance(answer, dict) and answer["refused"]
