"""Where the conformance data lives: real files other projects wrote, read in place.

The fortio result fixtures and the Istio, Linkerd and Nighthawk objects are other projects'
files. The repository never copies them; conformance tests read them from one directory:
``$MESHPERF_CONFORMANCE_DIR``, by default ``../shared`` beside the checkout. In a clone with
nothing beside it a conformance module skips as a whole with one reason; under CI=true the
data must be there, so its absence fails the run.

Use at the top of a conformance test module::

    from conformance import require
    FIXTURES = require("fixtures", "fortio")   # the module skips here when it is absent
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from needs import IN_CI

REPO = Path(__file__).resolve().parents[1]
ENV = "MESHPERF_CONFORMANCE_DIR"


def root() -> Path:
    """The conformance directory: $MESHPERF_CONFORMANCE_DIR, else ../shared beside the repo."""
    configured = os.environ.get(ENV, "").strip()
    return Path(configured).expanduser() if configured else REPO.parent / "shared"


def path(*parts: str) -> Path:
    """A path inside the conformance directory (it may not exist)."""
    return root().joinpath(*parts)


def available(*parts: str) -> bool:
    return path(*parts).exists()


def reason(*parts: str) -> str:
    where = path(*parts)
    return (
        f"conformance data {'/'.join(parts)} not found at {where} "
        f"(set {ENV} to the directory holding fixtures/ and upstream/)"
    )


def require(*parts: str) -> Path:
    """Return the path, or skip the calling module (fail it under CI=true) when it is absent.

    Call at module level, at import: the skip then covers every test of the module and the
    summary says once why.
    """
    where = path(*parts)
    if where.exists():
        return where
    module = sys._getframe(1).f_globals.get("__name__", "?")
    why = f"{module}: {reason(*parts)}"
    if IN_CI:
        pytest.fail(f"{why}; CI=true: it must be there", pytrace=False)
    pytest.skip(why, allow_module_level=True)
    raise AssertionError("unreachable")  # pragma: no cover
