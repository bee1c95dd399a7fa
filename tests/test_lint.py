"""The code stays ruff- and mypy-clean, and the project's own shell scripts shellcheck-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from needs import missing

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff() -> None:
    proc = _run([sys.executable, "-m", "ruff", "check", "runner", "tests", "bench"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy() -> None:
    proc = _run([sys.executable, "-m", "mypy", "runner"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_bootstrap_and_ci() -> None:
    if shutil.which("shellcheck") is None:
        missing("shellcheck not installed (Debian shellcheck)")
    proc = _run(["shellcheck", "-x", "scripts/bootstrap.sh", ".ci/run"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
