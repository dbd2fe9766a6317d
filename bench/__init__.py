"""Benchmarks (``make bench``): edujobs measured side by side against plain Dramatiq and raw pika.

Every figure is a ratio of contenders measured in the same run, alternating in order round after
round on this shared, noisy machine, and reported as the median of the rounds: never a pass/fail
timing assertion. Each comparison is one module exposing a ``COMPARISON``
(``bench.harness.Comparison``) and registered in ``bench.comparisons.COMPARISONS``; to add one (full
middleware stack, circuit breaker in front of a 50 ms fake provider, bulk email), write the module
with the helpers of ``bench.harness`` and ``bench.amqp`` and add it to that list.

The two ``*_actors`` modules are what the worker subprocesses import (``dramatiq bench.plain_actors``).
"""
