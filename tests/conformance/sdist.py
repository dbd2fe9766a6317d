"""Dramatiq's own test files, from the source distribution of the installed Dramatiq version.

The wheel carries no tests; the sdist does (``tests/*.py``, without the ``conftest.py`` and
``common.py`` of Dramatiq's repository). ``prepare`` downloads it with pip as this machine is
configured (no registry is named here), keeps it under ``var/conformance/`` for the next run, and
stages the test files we run in a package of their own next to a ``common.py`` that re-exports
``tests.conformance.common``; the fixtures come from ``tests.conformance.plugin`` (``pytest -p``).
The staged package is named after the version, never ``tests``, so that it cannot shadow edujobs'
own ``tests`` package.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "var" / "conformance"

_COMMON = '''"""Dramatiq's tests import their helpers from ``.common``: edujobs' stand-ins (staged copy)."""

from tests.conformance.common import *  # noqa: F403
'''


def installed_version() -> str:
    return importlib.metadata.version("dramatiq")


def download(version: str, cache: Path = CACHE) -> Path:
    """The sdist of Dramatiq ``version`` in ``cache``, downloaded with pip unless already there."""
    archive = cache / "sdist" / f"dramatiq-{version}.tar.gz"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
    command += ["--dest", str(archive.parent), f"dramatiq=={version}"]
    subprocess.run(command, check=True)
    if not archive.exists():
        raise RuntimeError(f"pip did not leave {archive.name} in {archive.parent} (see its output above)")
    return archive


def stage(archive: Path, version: str, files: tuple[str, ...], cache: Path = CACHE) -> Path:
    """Copy ``files`` (names under the sdist's ``tests/``) into a fresh package; return its path."""
    package = cache / ("dramatiq_" + version.replace(".", "_").replace("-", "_") + "_tests")
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    prefix = f"dramatiq-{version}/tests/"
    with tarfile.open(archive) as tar:
        for name in files:
            member = tar.extractfile(prefix + name)
            if member is None:
                raise RuntimeError(f"{archive.name} has no {prefix + name}")
            (package / name).write_bytes(member.read())
    (package / "__init__.py").write_text('"""Dramatiq\'s own tests, staged by tests.conformance."""\n')
    (package / "common.py").write_text(_COMMON)
    return package


def prepare(files: tuple[str, ...], cache: Path = CACHE) -> Path:
    version = installed_version()
    return stage(download(version, cache), version, files, cache)
