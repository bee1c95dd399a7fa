"""``--perf`` on the local platform: ``perf record`` the server sidecar, draw a flame graph.

``perf record -F 99 -g -p <pid>`` samples the server sidecar's stacks for the test's duration;
``perf script`` prints them; ``meshperf.flamegraph`` (shared with the kubernetes platform)
folds and draws them.

When perf is missing or not permitted (``perf_event_paranoid``, a container without
CAP_PERFMON) the test still runs and the result records ``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from meshperf import flamegraph
from meshperf.flamegraph import FREQUENCY, fold, render_svg
from meshperf.local.procs import Proc, ProcessGroup

__all__ = ["FREQUENCY", "PerfRecording", "fold", "probe", "render_svg"]

PROBE_TIMEOUT = 30.0
SCRIPT_TIMEOUT = 180.0


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
        folded = fold(run.stdout)
        if not folded:
            return {"error": "perf recorded no samples"}
        flamegraph.write(folded, svg, title)
        return {"flamegraph": str(svg), "samples": sum(folded.values())}

    def abort(self) -> None:
        self.proc.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
