"""Writing JSON the way fortio (Go ``encoding/json``) does, and fortio's result file ID rule.

Byte-for-byte fidelity matters only for diffing our files against fortio's; any JSON parser
reads either. The rules are in ``docs/fortio-format.md`` sections 1.1 and 3.1.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import Any

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
_ISO_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})\.(\d+)")
ID_MAX_BYTES = 96


def go_float(f: float) -> str:
    """Go's ``encoding/json`` float: shortest round-trip digits, ``e`` only outside [1e-6, 1e21)."""
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"JSON cannot hold {f!r}")
    if f == 0:
        return "0" if math.copysign(1.0, f) > 0 else "-0"
    r = repr(f)
    if 1e-6 <= abs(f) < 1e21:
        s = format(Decimal(r), "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    mant, _, exp = format(Decimal(r), "e").partition("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    sign = exp[0] if exp[0] in "+-" else "+"
    digits = exp.lstrip("+-").lstrip("0") or "0"
    if len(digits) < 2 and sign == "+":
        digits = digits.rjust(2, "0")
    return f"{mant}e{sign}{digits}"


def _go_str(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    return (
        out.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _encode(obj: Any, indent: str, level: int, parts: list[str]) -> None:
    if obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, int):
        parts.append(str(obj))
    elif isinstance(obj, float):
        parts.append(go_float(obj))
    elif isinstance(obj, str):
        parts.append(_go_str(obj))
    elif isinstance(obj, dict):
        if not obj:
            parts.append("{}")
            return
        pad = "\n" + indent * (level + 1)
        parts.append("{")
        for i, (k, v) in enumerate(obj.items()):
            parts.append(("," if i else "") + pad + _go_str(str(k)) + ": ")
            _encode(v, indent, level + 1, parts)
        parts.append("\n" + indent * level + "}")
    elif isinstance(obj, list | tuple):
        if not obj:
            parts.append("[]")
            return
        pad = "\n" + indent * (level + 1)
        parts.append("[")
        for i, v in enumerate(obj):
            parts.append(("," if i else "") + pad)
            _encode(v, indent, level + 1, parts)
        parts.append("\n" + indent * level + "]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any, newline: bool = True) -> str:
    """``MarshalIndent(obj, "", "  ")`` plus the CLI's trailing newline."""
    parts: list[str] = []
    _encode(obj, "  ", 0, parts)
    if newline:
        parts.append("\n")
    return "".join(parts)


def go_time(t: dt.datetime) -> str:
    """RFC 3339 with nanoseconds trimmed of trailing zeros, as Go's ``time.Time`` marshals."""
    if t.tzinfo is None:
        t = t.astimezone()
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    if frac:
        base += "." + frac
    off = t.utcoffset() or dt.timedelta(0)
    if off == dt.timedelta(0):  # Go's "Z07:00" layout writes Z for any zero offset
        return base + "Z"
    total = int(off.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{base}{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def parse_start_time(text: str) -> dt.datetime:
    """Go's RFC 3339 (nanoseconds, ``Z`` or any offset) as an aware datetime, truncated to µs."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"StartTime must be a non-empty string, got {text!r}")
    s = text.strip()
    if s[-1:] in "zZ":
        s = s[:-1] + "+00:00"
    # Python keeps microseconds; more digits are truncated here rather than relying on the
    # exact fraction lengths a given Python version accepts.
    s = _ISO_FRACTION.sub(lambda m: f"{m.group(1)}.{(m.group(2) + '000000')[:6]}", s, count=1)
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"StartTime {text!r} is not RFC 3339") from None
    if t.tzinfo is None:
        raise ValueError(f"StartTime {text!r} has no UTC offset")
    return t


def gen_id(when: dt.datetime, labels: str = "", run_id: int = 0) -> str:
    """Fortio >= 1.35 result ID: ``YYYY-MM-DD-HHMMSS[_<runid>][_<safe labels>]``, <= 96 bytes."""
    rid = when.strftime("%Y-%m-%d-%H%M%S")
    if run_id:
        rid += f"_{run_id}"
    if labels:
        safe = _ID_UNSAFE.sub("_", labels).rstrip("_")
        if safe:
            rid += "_" + safe
    return rid[:ID_MAX_BYTES]
