"""argparse ``type=`` converters shared by the CLIs: each raises ArgumentTypeError, so a bad
value becomes argparse's one-line error naming the flag."""

from __future__ import annotations

import argparse
import math
import re

from meshperf import limits
from meshperf.goduration import parse_seconds

# registry/path:tag@digest, as Kubernetes accepts it; nothing a manifest could be bent by.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9./_:@-]{0,254}")


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_float(text: str) -> float:
    v = finite_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def non_negative_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def _int(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
    return v


def positive_int(text: str) -> int:
    return _int(text, 1)


def non_negative_int(text: str) -> int:
    return _int(text, 0)


def image_ref(text: str) -> str:
    """A container image reference (``registry/name:tag`` or ``name@sha256:...``)."""
    if not _IMAGE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a container image reference (A-Z a-z 0-9 . / _ : @ -)"
        )
    return text


def duration_seconds(text: str) -> float:
    """DURATION: seconds or a Go duration (``meshperf.goduration.parse_seconds``), bounded by
    ``limits.MIN_DURATION``/``MAX_DURATION`` so a value that cannot run is refused here."""
    try:
        seconds = parse_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return limits.check_duration(seconds)


def repeat_count(text: str) -> int:
    return limits.check_repeat(positive_int(text))


def payload_size(text: str) -> int:
    """Response payload bytes, at most the echo server's cap (never cut silently)."""
    return limits.check_size(non_negative_int(text))


def workers_count(text: str) -> int:
    """Worker processes, at most ``limits.max_workers()`` on this machine."""
    return limits.check_workers(positive_int(text))
