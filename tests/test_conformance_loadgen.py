"""Conformance: the built-in generator writes every field a real fortio 1.28 result has."""

from __future__ import annotations

import json

from conformance import require
from test_loadgen import FORTIO_HTTP_KEYS

FIXTURES = require("fixtures", "fortio")


def test_generator_keys_cover_a_real_fortio_result() -> None:
    # test_loadgen checks that a real run writes exactly FORTIO_HTTP_KEYS, in this order.
    real = json.loads((FIXTURES / "http-with-errors-1.28.0.json").read_text())
    assert set(real) <= set(FORTIO_HTTP_KEYS), sorted(set(real) - set(FORTIO_HTTP_KEYS))
