"""Dramatiq's own tests run against edujobs' broker: what a Dramatiq user can expect of edujobs.

``python -m tests.conformance`` (``make test-conformance``) downloads the sdist of the installed
Dramatiq version, stages its test files (``sdist``) and runs them with the fixtures of ``plugin``;
``expectations`` lists the tests that fail here and why. Nothing in this package is named
``test_*.py``, so ``make test`` never collects it.
"""
