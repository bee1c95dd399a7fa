"""Executing a plan on a platform: one result file per test as it ends, resume, progress, signals.

``run_matrix`` is the whole of a run minus argument parsing: it starts the platform, runs each
test, writes ``<output_dir>/<ID>.json`` (fortio format plus the ``meshperf`` block) the moment a
test ends, keeps ``<output_dir>/run-<run_id>.json`` current, and always closes the platform. A
failed test is recorded with its reason and the matrix goes on; Ctrl-C or SIGTERM stops the
test in flight and keeps everything that finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform as pyplatform
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from meshperf import __version__, fortiojson
from meshperf.atomic import write_atomic
from meshperf.cli import python_command
from meshperf.errors import ExitCode, MeshperfError
from meshperf.fortiojson import parse_start_time
from meshperf.histogram import calc_percentile
from meshperf.loadcmd import uses_h2
from meshperf.plan import Plan, format_qps, format_seconds, recorded_mesh
from meshperf.platform import RESULT_KEY, Platform, TestSpec
from meshperf.results import error_percent

RUN_FORMAT = 1  # version of run-<id>.json; 1: first version

OK = "ok"
ERRORS = "errors"  # ran, result kept, but some requests failed
FAILED = "failed"  # the platform could not run it; no result file
SKIPPED = "skipped-resume"
INTERRUPTED = "interrupted"
NOT_RUN = "not-run"
RESUMED = "resumed"  # in an older run file: a later --resume ran this test (see ``file``)

# A write to the output dir is tried again after these pauses (seconds) before the run
# gives up on the directory: a full disk being cleaned or an NFS hiccup gets a chance.
WRITE_RETRIES: tuple[float, ...] = (0.2, 1.0)

# The facts that make two tests the same cell of a matrix, for --resume.
RESUME_KEYS: tuple[str, ...] = (
    "mode", "mesh", "platform", "conn", "qps", "duration", "size", "extra_labels", "repeat",
    "protocol", "h2",
)  # fmt: skip
# What a result written before a key existed meant by its absence: HTTP/1.1 and no labels.
_RESUME_DEFAULTS: dict[str, Any] = {"extra_labels": "", "protocol": "http", "h2": False}


@dataclasses.dataclass
class Outcome:
    """What became of one planned test."""

    index: int  # 1-based position in the plan
    spec: TestSpec
    status: str = NOT_RUN
    reason: str = ""
    file: str = ""
    wall_seconds: float = 0.0
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    effective_conn: int = 0  # connections the generator really used, when not those asked

    def record(self) -> dict[str, Any]:
        s = self.spec
        return {
            "index": self.index,
            "label": s.labels,
            "mode": s.mode,
            "conn": s.conn,
            "qps": s.qps,
            "duration": s.duration,
            "size": s.size,
            "extra_labels": s.extra_labels,
            "repeat": s.repeat,
            "protocol": s.protocol,
            "h2": uses_h2(s.protocol, s.h2),
            "status": self.status,
            "reason": self.reason,
            "file": self.file,
            "wall_seconds": round(self.wall_seconds, 3),
            **({"effective_conn": self.effective_conn} if self.effective_conn else {}),
            **self.stats,
        }


@dataclasses.dataclass
class RunReport:
    run_id: str
    output_dir: Path
    outcomes: list[Outcome]
    interrupted: bool = False
    signal_name: str = ""
    wall_seconds: float = 0.0
    run_file: Path | None = None
    output_error: str = ""  # the output dir refused writes: the run stopped there
    kept_dir: Path | None = None  # where results went that the output dir refused

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.output_error:
            return ExitCode.OUTPUT_FAILED
        if any(o.status in (FAILED, ERRORS, NOT_RUN) for o in self.outcomes):
            return ExitCode.TESTS_FAILED
        return ExitCode.OK


# ---- reading a result -----------------------------------------------------------------------


def result_stats(result: dict[str, Any]) -> dict[str, float]:
    """Achieved rate, p50/p90/p99 in ms, error percentage and request count of one result."""
    dh = result.get("DurationHistogram") or {}
    count = int(dh.get("Count") or 0)
    stored = {float(p["Percentile"]): float(p["Value"]) for p in dh.get("Percentiles") or []}

    def pct(p: float) -> float:
        v = stored.get(p)
        return 1000.0 * (v if v is not None else calc_percentile(dh, p))

    return {
        "achieved_qps": float(result.get("ActualQPS") or 0.0),
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "errors_pct": error_percent(result),  # the collector's rule (results.error_count)
        "requests": count,
    }


def _start_time(result: dict[str, Any]) -> dt.datetime:
    try:
        return parse_start_time(result.get("StartTime"))  # type: ignore[arg-type]
    except ValueError:
        return dt.datetime.now().astimezone()


def resume_key(block: dict[str, Any]) -> tuple[Any, ...]:
    mesh = recorded_mesh(str(block.get("platform", "")), str(block.get("mesh", "")))
    block = {**block, "mesh": mesh}  # a local "istio" result from before is an "envoy" one
    return tuple(
        float(block[k])
        if k in ("qps", "duration")
        else block.get(k, _RESUME_DEFAULTS.get(k, 0))
        for k in RESUME_KEYS
    )


def spec_key(spec: TestSpec, plan: Plan) -> tuple[Any, ...]:
    return resume_key(
        {
            "mode": spec.mode,
            "mesh": plan.mesh,
            "platform": plan.platform,
            "conn": spec.conn,
            "qps": spec.qps,
            "duration": spec.duration,
            "size": spec.size,
            "extra_labels": spec.extra_labels,
            "repeat": spec.repeat,
            "protocol": spec.protocol,
            "h2": uses_h2(spec.protocol, spec.h2),
        }  # fmt: skip
    )


def existing_results(output_dir: Path, keep_failed: bool = False) -> dict[tuple[Any, ...], Path]:
    """Result files already in ``output_dir``, by the facts ``--resume`` matches on.

    A result with failed requests (or none completed) does not count unless ``keep_failed``
    (``--resume-keep-failed``): resuming is for getting a good result of every cell.
    """
    found: dict[tuple[Any, ...], Path] = {}
    if not output_dir.is_dir():
        return found
    for p in sorted(output_dir.glob("*.json")):
        if p.name.startswith(("run-", ".")):
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            block = data[RESULT_KEY]
            if not isinstance(block, dict) or not all(k in block for k in RESUME_KEYS[:7]):
                continue
            if not keep_failed:
                stats = result_stats(data)
                if stats["requests"] == 0 or stats["errors_pct"] > 0:
                    continue
            found.setdefault(resume_key(block), p)
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            # not one of ours, or half-written by something else (RecursionError: JSON
            # nested too deeply for the json module, never a result)
            continue
    return found


def still_to_run(plan: Plan, output_dir: Path, keep_failed: bool = False) -> list[TestSpec]:
    """The tests of ``plan`` that ``--resume`` would run: those with no result in ``output_dir``."""
    have = existing_results(output_dir, keep_failed)
    return [t for t in plan.tests if spec_key(t, plan) not in have]


# ---- writing --------------------------------------------------------------------------------


def write_json_atomic(path: Path, obj: Any) -> Path:
    """fortio's JSON layout, written atomically (``meshperf.atomic``)."""
    return write_atomic(path, fortiojson.dumps(obj))


def with_retries(write: Callable[[], Path]) -> Path:
    """``write()``, tried again after each pause of ``WRITE_RETRIES``; the last OSError raises."""
    for pause in WRITE_RETRIES:
        try:
            return write()
        except OSError:
            time.sleep(pause)
    return write()


def kept_dir(run_id: str) -> Path:
    """Where results go that the output dir refused: private, outside the output dir, and
    never removed by the run (unlike the platform's work dir, which is)."""
    d = Path(tempfile.gettempdir()) / f"meshperf-kept-{run_id}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


class _OutputFailed(Exception):
    """The output dir refused a write even after retries: the matrix stops cleanly."""


def store_result(output_dir: Path, plan: Plan, spec: TestSpec, result: dict[str, Any]) -> Path:
    """Fill in the plan's facts, name the file after fortio's ID rule, write it atomically."""
    block = result.get(RESULT_KEY)
    if not isinstance(block, dict):
        block = {}
    # The runner's facts are authoritative; the platform adds target, resources, perf, ...
    facts = spec.result_block(platform=plan.platform, mesh=plan.mesh, run_id=plan.run_id)
    facts["run_id"] = plan.run_id
    for key in ("arrival", "resources"):  # the platform's own values win for these
        del facts[key]
    merged = {**facts, **{k: v for k, v in block.items() if k not in facts}}
    merged.setdefault("arrival", spec.arrival)
    merged.setdefault("resources", {})
    result[RESULT_KEY] = merged
    if not result.get("Labels"):
        result["Labels"] = spec.labels
    base = fortiojson.gen_id(_start_time(result), spec.labels)
    rid, n = base, 1
    while (output_dir / f"{rid}.json").exists():
        n += 1  # two tests in one second (sub-second durations) must not overwrite each other
        rid = f"{base[: fortiojson.ID_MAX_BYTES - 4]}_{n}"
    result["ID"] = rid
    threads = result.get("NumThreads")
    if isinstance(threads, int) and threads != spec.conn:
        merged["effective_conn"] = threads  # beside the requested ``conn``, never instead
    path = output_dir / f"{rid}.json"
    write_json_atomic(path, result)
    return path


def machine_facts() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "os": f"{pyplatform.system()} {pyplatform.release()}",
        "arch": pyplatform.machine(),
        "cpus": os.cpu_count(),
        "python": pyplatform.python_version(),
        "meshperf": __version__,
    }


# ---- progress -------------------------------------------------------------------------------


class Progress:
    """Plain progress: one line per finished test (not a TTY, or --quiet)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream

    def begin(self, outcome: Outcome, eta: float) -> None:
        pass

    def resize(self, total: int) -> None:
        """The run grew (SLO search steps are decided as it goes)."""
        self.total = total

    def end(self, outcome: Outcome, eta: float) -> None:
        print(f"[{outcome.index}/{self.total}] {describe(outcome)}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class BarProgress(Progress):
    """A tqdm bar over the matrix with an ETA from the remaining planned seconds."""

    def __init__(self, total: int, stream: TextIO) -> None:
        super().__init__(total, stream)
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit="test",
            file=stream,
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )
        self._eta_at = time.monotonic()
        self._eta = 0.0
        self._current = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The bar only redraws on updates; tick so the ETA counts down during a long test.
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self._ticker.start()

    def _postfix(self) -> None:
        left = max(0.0, self._eta - (time.monotonic() - self._eta_at))
        self.bar.set_postfix_str(f"{self._current} ETA {format_seconds(left)}")

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._postfix()

    def resize(self, total: int) -> None:
        with self._lock:
            self.total = self.bar.total = total
            self.bar.refresh()

    def begin(self, outcome: Outcome, eta: float) -> None:
        s = outcome.spec
        with self._lock:
            self._current = f"{s.mode} c={s.conn} qps={format_qps(s.qps)}"
            self._eta, self._eta_at = eta, time.monotonic()
            self._postfix()

    def end(self, outcome: Outcome, eta: float) -> None:
        with self._lock:
            if outcome.status not in (OK, SKIPPED):
                self.bar.write(
                    f"[{outcome.index}/{self.total}] {describe(outcome)}", file=self.stream
                )
            self._eta, self._eta_at = eta, time.monotonic()
            self.bar.update(1)
            self._postfix()

    def note(self, text: str) -> None:
        with self._lock:
            self.bar.write(text, file=self.stream)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=2)
        self.bar.close()


def describe(o: Outcome) -> str:
    s = o.spec
    head = f"{s.mode} c={s.conn} qps={format_qps(s.qps)} {s.duration:.15g}s"
    if s.repeat:
        head += f" repeat={s.repeat}"
    if o.status in (OK, ERRORS) and o.stats:
        st = o.stats
        tail = (
            f"{o.status}: {st['achieved_qps']:.1f} qps, p50 {st['p50_ms']:.3f} ms,"
            f" p99 {st['p99_ms']:.3f} ms, errors {st['errors_pct']:.2f}%"
        )
        if o.stats["requests"] == 0:
            tail += f" ({o.reason})"
        if o.effective_conn:
            tail += f" (ran {o.effective_conn} connections, not the {s.conn} asked)"
        return f"{head}: {tail}"
    return f"{head}: {o.status}" + (f": {o.reason}" if o.reason else "")


# ---- signals --------------------------------------------------------------------------------


class _Interrupts:
    """First Ctrl-C/SIGTERM stops the test in flight; outside a test, or a second time, abort."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.requested = False
        self.signal_name = ""
        self.in_test = False
        self.shielded = False  # while closing the platform nothing may interrupt the cleanup
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # SIGHUP: the terminal closed or the ssh session was lost; stop as cleanly as Ctrl-C.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.requested
        self.requested = True
        if first:
            self.signal_name = signal.Signals(signum).name
        if self.shielded:
            return
        if first and self.in_test:
            try:
                self.platform.stop_current()
            except Exception:  # noqa: BLE001 - a failing stop must not mask the interrupt
                pass
            return
        raise KeyboardInterrupt


# ---- the run --------------------------------------------------------------------------------


def run_matrix(
    platform: Platform,
    plan: Plan,
    output_dir: Path,
    *,
    resume: bool = False,
    resume_keep_failed: bool = False,
    command_line: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    progress: Callable[[int, TextIO], Progress] | None = None,
    stream: TextIO | None = None,
    more: Callable[[Outcome], Sequence[TestSpec]] | None = None,
    run_fields: Callable[[], dict[str, Any]] | None = None,
) -> RunReport:
    """Run every test of ``plan`` on ``platform``; always closes the platform.

    Raises only what makes the whole run impossible (ConfigError/PlatformError/ClusterError
    from ``platform.start``); per-test failures are recorded in the report. ``more``, called
    with each finished test, may return tests to append to the run (the SLO search,
    ``meshperf.search``); ``run_fields`` adds keys to the run file each time it is saved.
    """
    stream = stream if stream is not None else sys.stderr
    output_dir.mkdir(parents=True, exist_ok=True)
    outcomes = [Outcome(i, spec) for i, spec in enumerate(plan.tests, 1)]
    if resume:
        have = existing_results(output_dir, resume_keep_failed)
        for o in outcomes:
            found = have.get(spec_key(o.spec, plan))
            if found is not None:
                o.status, o.file, o.reason = SKIPPED, found.name, "result already in output dir"
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RecursionError):
                    # The earlier numbers, so the summary table stays complete.
                    o.stats = result_stats(json.loads(found.read_text(encoding="utf-8")))
    todo = [o for o in outcomes if o.status == NOT_RUN]
    report = RunReport(plan.run_id, output_dir, outcomes)
    run_file = output_dir / f"run-{plan.run_id}.json"
    started = time.monotonic()
    header: dict[str, Any] = {
        "format": RUN_FORMAT,
        "run_id": plan.run_id,
        "status": "running",
        "started": fortiojson.go_time(dt.datetime.now().astimezone()),
        "finished": "",
        "platform": plan.platform,
        "mesh": plan.mesh,
        "modes": list(plan.modes),
        "arrival": plan.tests[0].arrival if plan.tests else "",
        "command_line": list(command_line),
        "options": options or {},
        "machine": machine_facts(),
        "platform_metadata": {},
        "estimated_seconds": round(plan.estimated_seconds(), 1),
        "shuffle_seed": plan.shuffle_seed,  # --shuffle; "plan" lists the order it gave
        "plan": [dict(o.record(), status="planned", reason="", file="") for o in outcomes],
        "tests": [],
    }

    def save_run(status: str) -> None:
        header["status"] = status
        header["tests"] = [o.record() for o in outcomes]
        header["wall_seconds"] = round(time.monotonic() - started, 3)
        if run_fields is not None:
            header.update(run_fields())
        if status != "running":
            header["finished"] = fortiojson.go_time(dt.datetime.now().astimezone())
        if report.output_error:
            header["output_error"] = report.output_error
        try:
            with_retries(lambda: write_json_atomic(run_file, header))
            report.run_file = run_file
        except OSError as e:
            error = f"cannot write {run_file}: {e.strerror or e}"
            if not report.output_error:
                report.output_error = header["output_error"] = error
            # The run file goes where the results went, so it says what happened.
            with contextlib.suppress(OSError):
                report.kept_dir = report.kept_dir or kept_dir(plan.run_id)
                alt = report.kept_dir / run_file.name
                write_json_atomic(alt, header)
                report.run_file = alt
            if status == "running":
                raise _OutputFailed(error) from None

    guard = _Interrupts(platform)
    bar: Progress | None = None
    guard.install()
    try:
        try:
            if todo:
                platform.start(tuple(m for m in plan.modes if any(o.spec.mode == m for o in todo)))
            try:
                header["platform_metadata"] = platform.metadata()
            except Exception as e:  # noqa: BLE001 - metadata is informative; never fail a run on it
                header["platform_metadata"] = {"error": f"{type(e).__name__}: {e}"}
            save_run("running")
            bar = (progress or _default_progress)(len(outcomes), stream)
            for o in outcomes:
                if o.status == SKIPPED:
                    bar.end(o, plan.estimated_seconds(x.spec for x in todo if x.status == NOT_RUN))
            for o in todo:
                if guard.requested:
                    raise KeyboardInterrupt
                _run_one(platform, plan, output_dir, o, guard, bar, todo, report)
                if more is not None:  # appended tests are reached by this same loop
                    for spec in more(o):
                        todo.append(Outcome(len(outcomes) + 1, spec))
                        outcomes.append(todo[-1])
                    bar.resize(len(outcomes))
                save_run("running")
                if guard.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            report.interrupted = True
            report.signal_name = guard.signal_name or "SIGINT"
        except _OutputFailed as e:
            report.output_error = str(e)
            if bar is not None:
                where = (
                    f"; what was measured is kept in {report.kept_dir}" if report.kept_dir else ""
                )
                bar.note(f"error: {e}: the run stops here{where}")
    finally:
        guard.shielded = True
        try:
            if bar is not None:
                bar.close()
            platform.close()
        finally:
            guard.restore()
            report.wall_seconds = time.monotonic() - started
            if report.interrupted or report.output_error:
                why = (
                    f"run interrupted ({report.signal_name})"
                    if report.interrupted
                    else f"run stopped: {report.output_error}"
                )
                for o in outcomes:
                    if o.status == NOT_RUN:
                        o.reason = why
            if report.run_file is not None:  # written once the platform had started
                final = "interrupted" if report.interrupted else "finished"
                with contextlib.suppress(_OutputFailed):
                    save_run("output-failed" if report.output_error else final)
            if resume:
                with contextlib.suppress(OSError):
                    mark_resumed(output_dir, plan, outcomes)
    return report


def mark_resumed(output_dir: Path, plan: Plan, outcomes: Sequence[Outcome]) -> list[Path]:
    """Tell older run files which of their failed, interrupted or not-run tests this run did.

    fortio.py lists a run file's tests without a result as skipped; once ``--resume`` has run
    them, the old entries point at the new file (status ``resumed``) instead.
    """
    done = {
        spec_key(o.spec, plan): o
        for o in outcomes
        if o.status in (OK, ERRORS) and o.file and "/" not in o.file
    }
    changed: list[Path] = []
    if not done:
        return changed
    for p in sorted(output_dir.glob("run-*.json")):
        if p.name == f"run-{plan.run_id}.json":
            continue
        try:
            run = json.loads(p.read_text(encoding="utf-8"))
            tests = run["tests"]
            facts = {"mesh": run["mesh"], "platform": run["platform"]}
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        touched = False
        for t in tests if isinstance(tests, list) else []:
            if not isinstance(t, dict) or t.get("status") not in (
                FAILED,
                INTERRUPTED,
                NOT_RUN,
                ERRORS,
            ):
                continue
            try:
                o = done.get(resume_key({**t, **facts}))
            except (KeyError, TypeError, ValueError):
                continue
            if o is not None:
                t.update(
                    status=RESUMED,
                    file=o.file,
                    reason=f"{t.get('status')}; run again by run {plan.run_id}",
                )
                touched = True
        if touched:
            write_json_atomic(p, run)
            changed.append(p)
    return changed


def _default_progress(total: int, stream: TextIO) -> Progress:
    return BarProgress(total, stream) if _terminal_with_columns(stream) else Progress(total, stream)


def _terminal_with_columns(stream: TextIO) -> bool:
    """A TTY tqdm can draw on: on a 0-column pty (``script``, ``docker run -t`` before it is
    sized) the bar is empty and no test would show at all."""
    if not stream.isatty():
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (OSError, ValueError):  # says it is a terminal but has no size to ask: believe it
        return True


def _run_one(
    platform: Platform,
    plan: Plan,
    output_dir: Path,
    o: Outcome,
    guard: _Interrupts,
    bar: Progress,
    todo: list[Outcome],
    report: RunReport,
) -> None:
    def eta() -> float:
        pending = [x.spec for x in todo if x.status == NOT_RUN]
        return plan.estimated_seconds(pending) - plan.start_overhead if pending else 0.0

    bar.begin(o, eta())
    t0 = time.monotonic()
    result: dict[str, Any] | None = None
    guard.in_test = True
    try:
        result = platform.run_test(o.spec)
    except KeyboardInterrupt:
        # A second signal aborted the test the first one was stopping: still interrupted.
        o.status = INTERRUPTED
        o.reason = f"stopped by {guard.signal_name or 'SIGINT'} (aborted by a second signal)"
        raise
    except MeshperfError as e:
        o.status, o.reason = FAILED, f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - one broken test must not sink the matrix
        o.status, o.reason = FAILED, f"unexpected {type(e).__name__}: {e}"
    finally:
        guard.in_test = False
        o.wall_seconds = time.monotonic() - t0
    if guard.requested:
        # Stopped part-way: not a finished result, so it is not written.
        o.status, o.reason = INTERRUPTED, f"stopped by {guard.signal_name}"
        bar.end(o, eta())
        return
    if o.status != FAILED:
        if not isinstance(result, dict) or not isinstance(result.get("DurationHistogram"), dict):
            o.status, o.reason = FAILED, "platform returned no fortio result"
        else:
            guard.shielded = True  # a half-written file is worse than a late interrupt
            failure = ""
            try:
                o.file = with_retries(lambda: store_result(output_dir, plan, o.spec, result)).name
            except OSError as e:
                # Keep what was measured: in memory (the report) and in the kept dir.
                failure = f"cannot write results to {output_dir}: {e.strerror or e}"
                try:
                    report.kept_dir = report.kept_dir or kept_dir(plan.run_id)
                    o.file = str(store_result(report.kept_dir, plan, o.spec, result))
                except OSError as e2:
                    o.file = ""
                    failure += f"; nor to {report.kept_dir or tempfile.gettempdir()}: {e2}"
            finally:
                guard.shielded = False
            o.stats = result_stats(result)
            threads = result.get("NumThreads")
            if isinstance(threads, int) and threads != o.spec.conn:
                o.effective_conn = threads  # said in the test's line and the summary
            if o.stats["requests"] == 0:
                o.status, o.reason = ERRORS, "no request completed"
            elif o.stats["errors_pct"] > 0:
                o.status, o.reason = ERRORS, f"{o.stats['errors_pct']:.2f}% of requests failed"
            else:
                o.status = OK
            if failure:
                kept = f"kept in {o.file}" if o.file else "kept in memory only"
                o.reason = f"{o.reason}; {failure}; {kept}" if o.reason else f"{failure}; {kept}"
                bar.end(o, eta())
                raise _OutputFailed(failure)
    bar.end(o, eta())
    if guard.requested:
        raise KeyboardInterrupt


# ---- the end-of-run summary -----------------------------------------------------------------


def summary_table(report: RunReport) -> str:
    from meshperf import compare, trust  # numpy and requests: only once there are results

    rows = [
        ("#", "mode", "conn", "qps", "achieved", "p50 ms", "p90 ms", "p99 ms", "errors%", "status",
         "warnings")
    ]  # fmt: skip
    for o in report.outcomes:
        s, st = o.spec, o.stats
        num = (
            (f"{st['achieved_qps']:.1f}", f"{st['p50_ms']:.3f}", f"{st['p90_ms']:.3f}",
             f"{st['p99_ms']:.3f}", f"{st['errors_pct']:.2f}")
            if st else ("-",) * 5
        )  # fmt: skip
        # meshperf.trust: the causes that make this test's numbers suspect (codes only here).
        warn = ",".join(dict.fromkeys(trust.codes(trust.of_file(report.output_dir / o.file))))
        rows.append((str(o.index), s.mode, str(s.conn), format_qps(s.qps), *num, o.status,
                     warn if o.file else ""))  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {0, 2, 3, 4, 5, 6, 7, 8}
    lines = []
    for r in rows:
        cells = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    problems = [
        o
        for o in report.outcomes
        if o.status in (FAILED, ERRORS, INTERRUPTED) or (o.status == OK and o.reason)
    ]  # an ok test with a reason: its result is not where the others are (kept dir)
    for o in problems:
        lines.append(f"test {o.index} ({o.spec.labels}) {o.status}: {o.reason}")
    # Each mode's overhead over baseline, with its interval when there are repeats.
    lines += compare.overhead_lines(
        (dataclasses.asdict(o.spec), o.stats) for o in report.outcomes if o.stats
    )
    for o in report.outcomes:
        if o.effective_conn:
            # fortio's rule, which the built-in generator follows: at least 2 calls per
            # connection (periodic.go runQPSSetup), so qps x duration < 2 x conn lowers conn.
            lines.append(
                f"test {o.index} ({o.spec.labels}) ran {o.effective_conn} connections, not the"
                f" {o.spec.conn} asked: the load generator makes at least 2 calls per"
                " connection; the result records both (conn, effective_conn)"
            )
    return "\n".join(lines)


def next_steps(output_dir: Path, *also: Path) -> str:
    """The commands that turn the result files into a table and a graph.

    ``also``: further directories holding results of this run (the kept dir after the output
    dir refused writes), read by the same fortio.py command so no measured test is left out.
    """
    # Beside the directory, not in it: the directory is the input of the next fortio.py run.
    # "." and ".." have no name to build on ("--output -summary" would read as a flag): inside
    # then, where fortio.py recognises its own output and does not read it as a result.
    if output_dir.name in ("", ".."):
        summary = output_dir / "summary"
    else:
        summary = output_dir.parent / f"{output_dir.name}-summary"
    # The scripts as reachable from the current directory, so the lines work pasted as they are.
    scripts = Path(__file__).resolve().parents[1]
    if not os.path.relpath(scripts).startswith(".."):
        scripts = Path(os.path.relpath(scripts))
    fortio, graph = (shlex.quote(str(scripts / name)) for name in ("fortio.py", "graph.py"))
    out = " ".join(shlex.quote(str(d)) for d in (output_dir, *also))
    csv = shlex.quote(f"{summary}.csv")
    # The interpreter that ran this: system python may lack pandas and Bokeh.
    py = python_command()
    return (
        "next:\n"
        f"  {py} {fortio} {out} --output {shlex.quote(str(summary))}\n"
        f"  {py} {graph} {csv} p99"
    )
