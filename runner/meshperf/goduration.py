"""Go ``time.Duration`` text: parsing (``time.ParseDuration`` plus fortio's ``d`` unit) and
formatting (``Duration.String``), in integer nanoseconds.

Fortio flags such as ``-t 30s`` and the ``RequestedDuration`` field of its results use this
syntax, so the built-in load generator must read and write it exactly as Go does.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR  # fortio.org/duration accepts days; Go's time package does not

_UNITS: dict[str, int] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
}
_MAX_NS = (1 << 63) - 1
_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string (``"1m30s"``, ``"1.5ms"``, ``"-2h"``, ``"0"``).

    Raises ``ValueError`` with Go's wording for anything Go would reject.
    """
    orig = text
    s = text.strip()
    if not s:
        raise ValueError(f'invalid duration "{orig}"')
    neg = False
    if s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'invalid duration "{orig}"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f'invalid duration "{orig}"')
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f'invalid duration "{orig}"')
        if unit not in _UNITS:
            raise ValueError(f'unknown unit "{unit}" in duration "{orig}"')
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if frac:
            # Exact decimal arithmetic, truncating below a nanosecond like Go does.
            value += int(frac) * scale // (10 ** len(frac))
        total += value
        if total > _MAX_NS:
            raise ValueError(f'invalid duration "{orig}"')
        pos = m.end()
    return -total if neg else total


def _fmt_frac(v: int, prec: int) -> tuple[str, int]:
    """Go's ``fmtFrac``: the fraction digits of ``v`` with ``prec`` digits, trailing zeros cut."""
    digits = ""
    printed = False
    for _ in range(prec):
        d = v % 10
        printed = printed or d != 0
        if printed:
            digits = str(d) + digits
        v //= 10
    return ("." + digits if printed else ""), v


def format_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``"1m0s"``, ``"1.5s"``, ``"250µs"``, ``"0s"``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < SECOND:
        if u < MICROSECOND:
            out = f"{u}ns"
        elif u < MILLISECOND:
            frac, whole = _fmt_frac(u, 3)
            out = f"{whole}{frac}\u00b5s"
        else:
            frac, whole = _fmt_frac(u, 6)
            out = f"{whole}{frac}ms"
    else:
        frac, whole = _fmt_frac(u, 9)
        secs = whole % 60
        mins_total = whole // 60
        out = f"{secs}{frac}s"
        if mins_total > 0:
            mins = mins_total % 60
            hours = mins_total // 60
            out = f"{mins}m" + out
            if hours > 0:
                out = f"{hours}h" + out
    return "-" + out if neg else out


_SECONDS = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def parse_seconds(text: str) -> float:
    """A DURATION as the CLIs take it: seconds (``30``, ``2.5``, ``1e3``) or Go text (``1m30s``).

    The one parser of test durations: plain numbers are read as exact decimals and truncated
    to whole nanoseconds like Go's ``ParseDuration``, so what runs is what ``format_duration``
    prints. Raises ``ValueError``; bounds are ``meshperf.limits``'s business.
    """
    s = text.strip()
    if _SECONDS.fullmatch(s):
        from decimal import Decimal, InvalidOperation

        try:
            ns = int(Decimal(s) * SECOND)  # int() truncates toward zero, as Go does
        except (InvalidOperation, OverflowError):
            raise ValueError(f"invalid duration {text!r}") from None
    else:
        try:
            ns = parse_duration(s)
        except ValueError:
            raise ValueError(
                f"invalid duration {text!r}: expected seconds (30, 2.5) or a Go duration"
                " (1m30s, 500ms)"
            ) from None
    return ns / SECOND
