"""``python -m bench.node_client [--quick] [--rounds N] [--output PATH]``: the Node.js client's
enqueue rate beside the Python client's.

Both validate ``notifications.send_email`` payloads against the contract, sign them and publish
them with a 500-message confirm window to a durable ``notifications`` queue (the topology
``EdujobsBroker`` declares), each in its own RabbitMQ vhost, timed from the payloads to the last
confirm: ``Client.send_many`` (Python, pika) and ``sendMany`` (clients/node, amqplib), the latter
in a long-lived ``node`` process (``clients/node/bench/send-many.mjs``) that times the call itself,
so that Node's start-up is not counted. Needs node and ``make test-node`` (its ``npm ci``) once.
Figures go to ``var/bench/node_client.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.enqueue import ACTOR, SIGNING_KEY, SendMany, _opened, _purge
from bench.harness import (
    BenchError,
    ComparisonResult,
    Contender,
    Measurement,
    RatioSpec,
    Scale,
    check_services,
    run_side_by_side,
    summarise,
)
from bench.report import comparison_table, machine, results_document, start_run, write_json
from contracts.registry import get_contract

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "node"
DEFAULT_OUTPUT = Path("var/bench/node_client.json")


class NodeSendMany:
    """The Node client in a ``node`` process of its own, sending when told how many."""

    def __init__(self, url: str) -> None:
        node = shutil.which("node")
        if node is None or not (CLIENT / "node_modules" / "amqplib").is_dir():
            raise BenchError("needs node, and `make test-node` (npm ci in clients/node) run once")
        self.url = url
        # The queues, as a worker declares them (SendMany's set-up), then emptied.
        SendMany(url, get_contract(ACTOR)).close()
        self.process = subprocess.Popen(
            [node, "bench/send-many.mjs", url, SIGNING_KEY.decode()],
            cwd=CLIENT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._answer()  # ready: warmed up
        _purge(url, "notifications")

    def _answer(self) -> dict[str, float]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"the node process exited with {self.process.wait()}")
        answer: dict[str, float] = json.loads(line)
        return answer

    def measure(self, count: int) -> Measurement:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{count}\n")
        self.process.stdin.flush()
        answer = self._answer()
        _purge(self.url, "notifications")
        return Measurement(count=count, seconds=answer["seconds"], cpu_seconds=answer["cpu_seconds"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def run(scale: Scale) -> ComparisonResult:
    count = scale.pick(full=20_000, quick=2_000)
    with _opened(NodeSendMany) as node, _opened(lambda url: SendMany(url, get_contract(ACTOR))) as python:
        contenders = [
            Contender(
                "node_send_many", "Node sendMany (validate, sign, window 500)", lambda: node.measure(count)
            ),
            Contender(
                "python_send_many",
                "Python Client.send_many (validate, sign, window 500)",
                lambda: python.measure(count),
            ),
        ]
        measurements = run_side_by_side(contenders, scale.rounds)
    return summarise(
        name="node_client",
        title="Enqueue rate: the Node client beside the Python client",
        contenders=contenders,
        measurements=measurements,
        ratios=[RatioSpec("Node sendMany / Python send_many", "node_send_many", "python_send_many")],
        notes=[f"{count} persistent notifications.send_email per run, each client in its own vhost"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node_client", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N and one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON file (default {DEFAULT_OUTPUT})"
    )
    args = parser.parse_args(argv)
    console = start_run()
    scale = Scale(quick=args.quick, rounds=args.rounds or (1 if args.quick else 3))
    started, before = time.time(), machine()
    try:
        check_services()
        result = run(scale)
    except (BenchError, OSError, AssertionError) as e:
        console.print(f"[red]benchmark failed:[/red] {e}")
        return 1
    console.print(comparison_table(result))
    write_json(args.output, results_document([result], scale=scale, started=started, machine_before=before))
    console.print(f"Figures written to {args.output} ({time.time() - started:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
