"""The highest request rate that meets a latency/error SLO: ``runner.py --find-max --slo``.

For each selected mode and connection count a bracketing search runs real tests: an
exponential ramp (the rate doubles from the start rate while the SLO holds, halves while it
does not), then bisection between the highest rate that met the SLO and the lowest that did
not, until the two are within the resolution (``--find-max-resolution 5%``: the bracket is at
most 5% of the rate found). What it reports, ``max_qps``, is always a rate a real test met.

A step whose load could not be offered as asked (the generator, or connections busy with
slow responses, sent fewer requests than planned, or sent them late) hides latency
(coordinated omission), so it is neither met nor not met: it ends that search with the
reason, and ``max_qps`` is then a lower bound, said so wherever it is shown.

The logic is pure: ``Search`` is a state machine fed one ``Step`` at a time, ``find_max``
drives it with any "run one test at this rate" callable (a fake platform in the tests), and
``SearchRun`` drives it from ``meshperf.run.run_matrix``, where every step is an ordinary test
with an ordinary result file (label tag ``findmax``, ``meshperf.search`` block) and the run
file gets ``"slo_search"``: one record per search with its steps.

Nighthawk's adaptive load controller (envoyproxy/nighthawk, ``source/adaptive_load/``,
``api/adaptive_load/``) searches the same way: a metric threshold per step, a step
controller that raises or lowers the rate, and it too refuses to judge steps whose offered
load did not materialize.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meshperf import loadcmd, trust
from meshperf.errors import ResultsError
from meshperf.goduration import SECOND, parse_duration
from meshperf.plan import Plan, format_seconds, make_label
from meshperf.platform import RESULT_KEY, Platform, TestSpec
from meshperf.results import FortioResult
from meshperf.run import ERRORS, INTERRUPTED, OK, Outcome

FIND_MAX_LABEL = "findmax"  # label tag of every search step (the facts are in the block)
DEFAULT_START_QPS = 100.0  # the pure search's default start
# QPS 0 on the command line starts each search at this many req/s per connection: a 10 ms
# pace keeps the generator's timers and the proxies' workers awake. Slower, latency on a
# virtual machine rises again (every call pays the wake-up of each process on its path): on
# a 2-core VM two sidecars over 8 connections gave p99 2.9 ms at 200 req/s, 1.1 ms at 800
# and 2.4 ms at 1600, so a search starting low would judge a mode by its idle behaviour.
START_QPS_PER_CONNECTION = 100.0
DEFAULT_RESOLUTION = 0.05
RAMP_FACTOR = 2.0
MAX_RAMP_STEPS = 14  # 100 req/s doubled 13 times is 819200 req/s: beyond any one client
MIN_QPS = 1.0  # below this a downward ramp gives up: the SLO is not met at any useful rate
RETRIES = 1  # times a step that could not judge the SLO is run again before the search ends
# Below this many calls per connection a step's percentiles say nothing (a p99 of 3 calls):
# the downward ramp stops at the rate that gives each connection that many.
MIN_CALLS_PER_CONNECTION = 10

# A step judges the SLO only if the load was offered as planned (coordinated omission hides
# latency otherwise): meshperf.trust's "behind" rule, with its thresholds.
ACHIEVED_MIN_SHARE = trust.ACHIEVED_MIN_FRACTION
SEND_LAG_P99_MAX = trust.SENDLAG_P99_S  # seconds; only the built-in generator records it

_LATENCY_KEY = re.compile(r"p(\d{1,2}(?:\.\d+)?)")


# ---- the SLO --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Slo:
    """Latency bounds (percentile -> seconds) and an error budget (percent of requests)."""

    latency: tuple[tuple[float, float], ...] = ()  # ((99.0, 0.005), ...), sorted by percentile
    errors_pct: float | None = None

    def __post_init__(self) -> None:
        if not self.latency and self.errors_pct is None:
            raise ValueError("an SLO needs at least one bound")
        for p, limit in self.latency:
            if not 0 < p < 100 or not limit > 0:
                raise ValueError(f"bad latency bound p{p:g} <= {limit!r} s")
        if self.errors_pct is not None and not 0 <= self.errors_pct <= 100:
            raise ValueError(f"error budget {self.errors_pct!r}% is not in 0-100")

    @property
    def text(self) -> str:
        """The canonical ``--slo`` form: ``p99=5ms,errors=0.1%``."""
        parts = [f"p{p:g}={_duration_text(s)}" for p, s in self.latency]
        if self.errors_pct is not None:
            parts.append(f"errors={self.errors_pct:g}%")
        return ",".join(parts)

    def describe(self) -> str:
        """For people: ``p99 5 ms, errors 0.1%``."""
        parts = [f"p{p:g} {s * 1000:g} ms" for p, s in self.latency]
        if self.errors_pct is not None:
            parts.append(f"errors {self.errors_pct:g}%")
        return ", ".join(parts)

    def record(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "latency_ms": {f"p{p:g}": s * 1000 for p, s in self.latency},
            "errors_pct": self.errors_pct,
        }


def _duration_text(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        v = seconds / scale
        if v >= 1 and math.isclose(v, round(v, 6)):
            return f"{round(v, 6):g}{unit}"
    return f"{seconds * 1e6:g}us"


def parse_slo(text: str) -> Slo:
    """``--slo p99=5ms[,p50=1ms][,errors=0.1%]``; argparse type (ArgumentTypeError)."""
    latency: dict[float, float] = {}
    errors: float | None = None
    items = [i.strip() for i in text.split(",")]
    if not text.strip() or any(not i for i in items):
        raise argparse.ArgumentTypeError(f"invalid SLO {text!r}: empty item")
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise argparse.ArgumentTypeError(
                f"invalid SLO item {item!r}: expected pNN=DURATION or errors=PCT%"
            )
        if key == "errors":
            if not value.endswith("%"):
                raise argparse.ArgumentTypeError(
                    f"invalid SLO item {item!r}: the error budget is a percentage (errors=0.1%)"
                )
            try:
                errors = float(value[:-1])
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"invalid SLO item {item!r}: {value!r} is not a percentage"
                ) from None
            if not 0 <= errors < 100 or math.isnan(errors):
                raise argparse.ArgumentTypeError(
                    f"invalid SLO item {item!r}: the error budget must be >= 0% and < 100%"
                )
            continue
        m = _LATENCY_KEY.fullmatch(key)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"invalid SLO item {item!r}: {key!r} is neither a percentile (p50, p99, p99.9)"
                " nor errors"
            )
        p = float(m.group(1))
        if not 0 < p < 100:
            raise argparse.ArgumentTypeError(
                f"invalid SLO item {item!r}: percentile must be > 0 and < 100"
            )
        try:
            ns = parse_duration(value)  # the Go duration syntax fortio's flags use
        except ValueError:
            ns = -1
        if ns <= 0 or value[-1].isdigit():
            raise argparse.ArgumentTypeError(
                f"invalid SLO item {item!r}: {value!r} is not a duration > 0 with a unit"
                " (5ms, 500us, 1.5s)"
            )
        latency[p] = ns / SECOND
    return Slo(tuple(sorted(latency.items())), errors)


def resolution_text(text: str) -> float:
    """``--find-max-resolution 5%``: the bracket's width relative to the rate found."""
    t = text.strip()
    if not t.endswith("%"):
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be a percentage, e.g. 5%")
    try:
        v = float(t[:-1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not a percentage") from None
    if not 0.1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be between 0.1% and 100%")
    return v / 100.0


# ---- one step -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """One test of a search and its verdict against the SLO."""

    qps: float  # requested
    achieved: float = 0.0
    latency_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)  # "p99" -> ms
    errors_pct: float = 0.0
    met: bool | None = None  # None: the step could not judge the SLO (see reason)
    reason: str = ""  # why not met, or why it could not judge
    file: str = ""
    warnings: str = ""  # meshperf.trust's other warnings on the result (cpu-pressure, ...)

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "qps": self.qps,
            "achieved": round(self.achieved, 3),
            "p99": _round(self.latency_ms.get("p99")),
            "errors": round(self.errors_pct, 4),
            "met": self.met,
        }
        for key, v in self.latency_ms.items():
            if key != "p99":
                rec[key] = _round(v)
        if self.reason:
            rec["reason"] = self.reason
        if self.file:
            rec["file"] = self.file
        if self.warnings:
            rec["warnings"] = self.warnings
        return rec


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def offered_thresholds(qps: float, conn: int, duration: float) -> trust.Thresholds:
    """``meshperf.trust``'s thresholds for a test of ``conn`` connections at ``qps`` for
    ``duration`` s, the achieved-rate floor lowered by what fortio's own schedule costs.

    Each connection paces its calls at ``conn/qps`` s; with ``-uniform`` the last one starts
    up to one such interval late, and every one ends on its last slot, so a run that keeps its
    schedule perfectly still takes up to ``duration + conn/qps`` s: 100 req/s over 8
    connections for 5 s achieves 98.4 req/s with nobody behind. Only a shortfall beyond that
    means the load was not offered.
    """
    if qps <= 0 or duration <= 0:
        return trust.DEFAULT
    schedule = duration / (duration + conn / qps)
    return dataclasses.replace(
        trust.DEFAULT, achieved_min_fraction=trust.ACHIEVED_MIN_FRACTION * schedule
    )


def judge(
    slo: Slo,
    result: Mapping[str, Any],
    qps: float,
    file: str = "",
    *,
    conn: int = 0,
    duration: float = 0.0,
) -> Step:
    """The step a fortio result makes: its numbers and met / not met / cannot judge.

    Whether the load was offered as asked is ``meshperf.trust``'s ``behind`` rule (achieved
    rate, send lag), with the schedule's own cost allowed for (``offered_thresholds``) when
    ``conn`` and ``duration`` are given; its other warnings (CPU pressure, errors, ...) are
    kept with the step but do not stop the search: the SLO itself decides on errors.
    """
    try:
        r = FortioResult(result, file)
    except ResultsError as e:
        return Step(qps=qps, reason=f"unreadable result: {e}", file=file)
    count = r.count
    lat = {"p99": 1000.0 * r.percentile(99.0)} if count else {}
    for p, _ in slo.latency:
        if count:
            lat[f"p{p:g}"] = 1000.0 * r.percentile(p)
    thresholds = offered_thresholds(qps, conn, duration) if conn else trust.DEFAULT
    warnings = trust.assess(r, thresholds=thresholds) if count else []
    base = Step(
        qps=qps,
        achieved=r.actual_qps,
        latency_ms=lat,
        errors_pct=r.error_percent if count else 100.0,
        file=file,
        warnings=trust.text([w for w in warnings if w.code != "behind"]),
    )
    if count == 0:
        return dataclasses.replace(base, reason="no request completed")
    behind = [w.detail for w in warnings if w.code == "behind"]
    if behind:
        return dataclasses.replace(
            base,
            reason=f"load not offered: {'; '.join(behind)}: the generator or its connections"
            " fell behind, so latency is understated (coordinated omission)",
        )
    broken = [
        f"p{p:g} {lat[f'p{p:g}']:.3f} ms > {limit * 1000:g} ms"
        for p, limit in slo.latency
        if lat[f"p{p:g}"] > limit * 1000
    ]
    if slo.errors_pct is not None and base.errors_pct > slo.errors_pct:
        broken.append(f"errors {base.errors_pct:.3f}% > {slo.errors_pct:g}%")
    return dataclasses.replace(base, met=not broken, reason="; ".join(broken))


# ---- the search -----------------------------------------------------------------------------

FOUND = "found"  # bracket narrowed to the resolution
LOAD_LIMIT = "load-not-offered"  # a step could not judge: max_qps is a lower bound
CEILING = "no-failure"  # the ramp never broke the SLO: max_qps is a lower bound
NEVER_MET = "never-met"  # not met even at MIN_QPS
STEP_FAILED = "step-failed"  # a test did not run; max_qps so far is a lower bound
UNFINISHED = "unfinished"  # the run stopped (Ctrl-C) before the search ended


class Search:
    """The bracketing search as a state machine: ``next_qps()``, run it, ``add(step)``, repeat
    until ``done``. Pure: no clock, no I/O."""

    def __init__(
        self,
        start_qps: float = DEFAULT_START_QPS,
        resolution: float = DEFAULT_RESOLUTION,
        *,
        max_ramp_steps: int = MAX_RAMP_STEPS,
        min_qps: float = MIN_QPS,
        retries: int = RETRIES,
    ) -> None:
        if not start_qps > 0:
            raise ValueError(f"start rate must be > 0, got {start_qps!r}")
        if not 0 < resolution <= 1:
            raise ValueError(f"resolution must be in (0, 1], got {resolution!r}")
        self.start_qps = float(start_qps)
        self.resolution = resolution
        self.max_ramp_steps = max_ramp_steps
        self.min_qps = min_qps
        self.retries = retries
        self.steps: list[Step] = []
        self.lo: float | None = None  # highest rate met
        self.hi: float | None = None  # lowest rate not met
        self.outcome = ""  # one of FOUND ... once done
        self.reason = ""
        self._next: float | None = self.start_qps

    @property
    def done(self) -> bool:
        return self._next is None

    @property
    def max_qps(self) -> float:
        """The highest rate a step met (0 if none did)."""
        return self.lo or 0.0

    @property
    def lower_bound(self) -> bool:
        """``max_qps`` is only a lower bound: the search could not bracket the limit."""
        return self.outcome not in (FOUND, NEVER_MET)

    def next_qps(self) -> float | None:
        return self._next

    def add(self, step: Step) -> None:
        if self._next is None:
            raise RuntimeError("search already finished")
        self.steps.append(step)
        q = step.qps
        if step.met is None:
            # A step that could not judge is run once more at the same rate: on a shared
            # machine a burst of someone else's CPU use delays sends for a few seconds.
            tries = sum(1 for st in self.steps if st.qps == q and st.met is None)
            if tries <= self.retries:
                self._next = q
                return
            self._stop(LOAD_LIMIT, f"stopped at {q:g} req/s: {step.reason}")
            return
        if step.met:
            self.lo = q if self.lo is None else max(self.lo, q)
        else:
            self.hi = q if self.hi is None else min(self.hi, q)
        self._next = self._choose()

    def fail(self, qps: float, reason: str) -> None:
        """The test at ``qps`` did not run at all (platform error): end with what is known."""
        self.steps.append(Step(qps=qps, reason=reason))
        self._stop(STEP_FAILED, f"the test at {qps:g} req/s failed: {reason}")

    def _stop(self, outcome: str, reason: str) -> None:
        self._next = None
        self.outcome, self.reason = outcome, reason

    def _choose(self) -> float | None:
        lo, hi = self.lo, self.hi
        if hi is None:  # only met so far: ramp up
            assert lo is not None
            if sum(1 for st in self.steps if st.met is not None) >= self.max_ramp_steps:
                self._stop(CEILING, f"the SLO held up to {lo:g} req/s, the ramp's last step")
                return None
            return lo * RAMP_FACTOR
        if lo is None:  # only not met so far: ramp down
            if hi <= self.min_qps:
                self._stop(NEVER_MET, f"the SLO was not met even at {hi:g} req/s")
                return None
            q = hi / RAMP_FACTOR
            return max(_whole(q) if q >= 10 else q, self.min_qps)
        if hi - lo <= self.resolution * lo:
            self._stop(
                FOUND,
                f"between {lo:g} (met) and {hi:g} req/s (not met), within"
                f" {100 * self.resolution:g}%",
            )
            return None
        mid = _whole((lo + hi) / 2) if lo >= 10 else (lo + hi) / 2
        if not lo < mid < hi:  # whole rates cannot split the bracket any further
            self._stop(FOUND, f"between {lo:g} (met) and {hi:g} req/s (not met)")
            return None
        return mid

    def record(self) -> dict[str, Any]:
        return {
            "max_qps": self.max_qps,
            "lower_bound": self.lower_bound,
            "outcome": self.outcome or UNFINISHED,
            "reason": self.reason if self.done else "the run stopped before this search ended",
            "steps": [s.record() for s in self.steps],
        }


def _whole(q: float) -> float:
    return float(round(q))


def min_rate(conn: int, duration: float) -> float:
    """The lowest rate a search tries: ``MIN_CALLS_PER_CONNECTION`` calls per connection."""
    return float(max(MIN_QPS, math.ceil(MIN_CALLS_PER_CONNECTION * conn / duration)))


def worst_case_steps(
    resolution: float, max_ramp_steps: int = MAX_RAMP_STEPS, start_qps: float = DEFAULT_START_QPS
) -> int:
    """The most steps one search can take: the longest ramp, then a bisection of the last
    doubling down to the resolution (each halving the bracket)."""
    down = max(1, math.floor(math.log(start_qps / MIN_QPS, RAMP_FACTOR)) + 1)
    ramp = max(max_ramp_steps, down + 1)
    bisect = max(0, math.ceil(math.log2((RAMP_FACTOR - 1) / resolution)))
    return ramp + bisect + RETRIES  # the retry of the step that ends the search


def find_max(
    run_at: Callable[[float], Step],
    start_qps: float = DEFAULT_START_QPS,
    resolution: float = DEFAULT_RESOLUTION,
    **kwargs: Any,
) -> Search:
    """Run a whole search with ``run_at(qps) -> Step`` (judged, e.g. with ``judge``)."""
    search = Search(start_qps, resolution, **kwargs)
    while (q := search.next_qps()) is not None:
        search.add(run_at(q))
    return search


# ---- the search inside a run ----------------------------------------------------------------


def step_labels(extra_labels: str) -> str:
    """The label tag of search steps: the user's labels plus ``findmax``."""
    return f"{extra_labels}_{FIND_MAX_LABEL}" if extra_labels else FIND_MAX_LABEL


def step_label(run_id: str, spec: TestSpec, qps: float) -> str:
    """The fortio label of ``spec``'s search at ``qps``: the plan's own label rule."""
    token = loadcmd.label_token(spec.protocol, spec.h2)
    return make_label(run_id, qps, spec.conn, spec.size, spec.extra_labels, spec.mode, token)


@dataclasses.dataclass
class _Entry:
    mode: str
    conn: int
    search: Search
    first: TestSpec  # step 1, the template of the others


class SearchRun:
    """The searches of one run, driven from ``run_matrix`` one finished test at a time.

    ``plan`` holds step 1 of every (conn, mode) search; ``more(outcome)`` judges a finished
    step and returns the next test of its search (appended to the run, so the searches of
    the modes interleave and run side by side in time); ``run_fields()`` is the run file's
    ``slo_search``; ``wrap(platform)`` adds the ``search`` block to each step's result.
    """

    def __init__(self, plan: Plan, slo: Slo, resolution: float, output_dir: Path) -> None:
        self.plan = plan
        self.slo = slo
        self.resolution = resolution
        self.output_dir = output_dir
        self.entries: list[_Entry] = []
        self._by_spec: dict[TestSpec, tuple[_Entry, int]] = {}
        for spec in plan.tests:
            search = Search(spec.qps, resolution, min_qps=min_rate(spec.conn, spec.duration))
            e = _Entry(spec.mode, spec.conn, search, spec)
            self.entries.append(e)
            self._by_spec[spec] = (e, 1)

    def spec_at(self, e: _Entry, qps: float) -> TestSpec:
        return dataclasses.replace(
            e.first, qps=float(qps), labels=step_label(self.plan.run_id, e.first, qps)
        )

    def more(self, outcome: Outcome) -> list[TestSpec]:
        """Judge a finished step; the next test of its search, if any."""
        found = self._by_spec.get(outcome.spec)
        if found is None:
            return []
        e, _ = found
        if e.search.done or outcome.status == INTERRUPTED:
            return []  # a step stopped midway says nothing; the search stays unfinished
        if outcome.status in (OK, ERRORS) and outcome.file:
            try:
                text = (self.output_dir / outcome.file).read_text(encoding="utf-8")
                result = json.loads(text)
            except (OSError, ValueError) as err:
                e.search.fail(outcome.spec.qps, f"result {outcome.file} unreadable: {err}")
                return []
            s = outcome.spec
            e.search.add(
                judge(self.slo, result, s.qps, outcome.file, conn=s.conn, duration=s.duration)
            )
        else:
            e.search.fail(outcome.spec.qps, f"{outcome.status}: {outcome.reason}")
            return []
        q = e.search.next_qps()
        if q is None:
            return []
        spec = self.spec_at(e, q)
        self._by_spec[spec] = (e, len(e.search.steps) + 1)
        return [spec]

    def step_info(self, spec: TestSpec) -> dict[str, Any] | None:
        found = self._by_spec.get(spec)
        if found is None:
            return None
        e, n = found
        return {"slo": self.slo.text, "step": n, "mode": e.mode, "conn": e.conn}

    def records(self) -> list[dict[str, Any]]:
        return [
            {"mode": e.mode, "conn": e.conn, "slo": self.slo.text, **e.search.record()}
            for e in self.entries
        ]

    def run_fields(self) -> dict[str, Any]:
        return {
            "slo_search": self.records(),
            "slo_search_settings": {
                "slo": self.slo.record(),
                "resolution": self.resolution,
                "ramp_factor": RAMP_FACTOR,
                "achieved_min_share": ACHIEVED_MIN_SHARE,
                "send_lag_p99_max_ms": SEND_LAG_P99_MAX * 1000,
            },
        }

    def wrap(self, platform: Platform) -> SearchPlatform:
        return SearchPlatform(platform, self)

    def hooks(self) -> dict[str, Any]:
        """The keyword arguments that let ``run_matrix`` drive these searches."""
        return {"more": self.more, "run_fields": self.run_fields}

    def summary(self) -> str:
        return summary_text(self.records(), self.slo)

    def start_note(self) -> str:
        """Said beside the run's start line, whose estimate counts only the first steps."""
        n = len(self.entries)
        worst = worst_case_steps(self.resolution, start_qps=self.plan.tests[0].qps) if n else 0
        return (
            f"SLO search ({self.slo.describe()}): {n} searches of up to {worst} steps each,"
            " decided as they go; the estimate above is for their first steps"
        )

    def dry_run(self) -> str:
        return dry_run_text(
            self.plan, self.slo, self.resolution, self.plan.per_test_overhead,
            self.plan.start_overhead,
        )  # fmt: skip


class SearchPlatform:
    """A platform whose results say which search step they are (``meshperf.search``)."""

    def __init__(self, inner: Platform, run: SearchRun) -> None:
        self.inner = inner
        self.run = run
        self.name = inner.name

    def start(self, modes: tuple[str, ...]) -> None:
        self.inner.start(modes)

    def run_test(self, spec: TestSpec) -> dict[str, Any]:
        result: dict[str, Any] = self.inner.run_test(spec)
        info = self.run.step_info(spec)
        if info is not None and isinstance(result, dict):
            block = result.setdefault(RESULT_KEY, {})
            if isinstance(block, dict):
                block["search"] = info
        return result

    def metadata(self) -> dict[str, Any]:
        return self.inner.metadata()  # type: ignore[no-any-return]

    def stop_current(self) -> None:
        self.inner.stop_current()

    def close(self) -> None:
        self.inner.close()


# ---- what people read -----------------------------------------------------------------------


def _qps_cell(r: Mapping[str, Any]) -> str:
    q = float(r.get("max_qps") or 0.0)
    text = f"{q:g}" if q else "0"
    return f">= {text}" if r.get("lower_bound") and q else text


def shares(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each non-baseline mode's max rate as a share of the baseline's, per conn."""
    out: list[dict[str, Any]] = []
    base = {r["conn"]: r for r in records if r["mode"] == "baseline"}
    for r in records:
        b = base.get(r["conn"])
        if r["mode"] == "baseline" or b is None:
            continue
        bq, q = float(b.get("max_qps") or 0), float(r.get("max_qps") or 0)
        if bq <= 0 or q <= 0:  # no rate met: the table and its reason say so
            continue
        # A lower bound for the baseline makes the share an upper bound, and the other way
        # round; both lower bounds: nothing can be said.
        if b.get("lower_bound") and r.get("lower_bound"):
            continue
        qualifier = ""
        if b.get("lower_bound"):
            qualifier = "at most "
        elif r.get("lower_bound"):
            qualifier = "at least "
        out.append(
            {
                "mode": r["mode"],
                "conn": r["conn"],
                "share_pct": 100.0 * q / bq,
                "qualifier": qualifier,
            }
        )
    return out


def summary_text(records: Sequence[Mapping[str, Any]], slo: Slo) -> str:
    """The end-of-run lines: max_qps per mode and conn, and the sidecars' share of baseline."""
    if not records:
        return ""
    rows = [("mode", "conn", "max_qps", "steps", "how it ended")]
    for r in records:
        rows.append(
            (r["mode"], str(r["conn"]), _qps_cell(r), str(len(r["steps"])), r.get("reason") or "")
        )
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [f"SLO search ({slo.describe()}): highest rate that met it"]
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].rjust(widths[3]),
        ]
        lines.append(("  ".join(cells) + "  " + row[4]).rstrip())
    for s in shares(records):
        lines.append(
            f"{s['mode']} sustains {s['qualifier']}{s['share_pct']:.0f}% of baseline's rate"
            f" under {slo.describe()} ({s['conn']} connections)"
        )
    if any(r.get("lower_bound") for r in records):
        lines.append(
            ">= : a lower bound; the search stopped before it bracketed the limit (see why)"
        )
    steps = [st for r in records for st in r.get("steps") or []]
    pressed = [st for st in steps if "cpu-pressure" in str(st.get("warnings") or "")]
    if pressed:
        lines.append(
            f"trust: {len(pressed)} of {len(steps)} steps ran under CPU pressure (tasks waiting"
            " for a core): their latency includes this machine's queueing, so the rates found"
            " are lower than a quiet machine gives"
        )
    return "\n".join(lines)


def dry_run_text(
    plan: Plan, slo: Slo, resolution: float, per_test_overhead: float, start_overhead: float
) -> str:
    """What ``--find-max --dry-run`` prints: how the search goes and its worst-case time."""
    n = len(plan.tests)
    if n == 0:
        return "SLO search: nothing selected"
    start = plan.tests[0].qps
    worst = worst_case_steps(resolution, start_qps=start)
    duration = plan.tests[0].duration
    worst_s = start_overhead + n * worst * (duration + per_test_overhead)
    lines = [
        f"SLO search: the {n} tests above are the first steps of {n} searches"
        f" ({', '.join(f'{t.mode} c={t.conn}' for t in plan.tests)}), each for the highest"
        f" rate meeting {slo.describe()}; the estimate above covers those first steps only",
        f"  each step is a {duration:g} s test, written as a result (label tag"
        f" {FIND_MAX_LABEL!r}); the rate starts at {start:g} req/s and doubles while the"
        " SLO holds (halves while it does not),",
        f"  then bisects between the highest rate met and the lowest not met until they are"
        f" within {100 * resolution:g}%;",
        f"  a step whose load was not offered as asked (achieved < {100 * ACHIEVED_MIN_SHARE:g}%"
        " of what the schedule allows, or send lag p99 >"
        f" {SEND_LAG_P99_MAX * 1000:g} ms) is run again once,"
        " then ends its search: the rate found is then a lower bound",
        f"  worst case {worst} steps per search ({MAX_RAMP_STEPS} ramp +"
        f" {worst - MAX_RAMP_STEPS - RETRIES} bisection + {RETRIES} retry):"
        f" {format_seconds(worst_s)}"
        f" ({n} x {worst} x ({duration:g} s + {per_test_overhead:g} s) +"
        f" {start_overhead:g} s start-up); a search usually needs about half",
    ]
    return "\n".join(lines)


def records_in(run_doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``slo_search`` records of a run file (``[]`` when it has none)."""
    recs = run_doc.get("slo_search")
    if not isinstance(recs, list):
        return []
    return [r for r in recs if isinstance(r, dict) and "mode" in r and "steps" in r]


def knee(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The step at ``max_qps`` (the last rate that met the SLO), for marking charts."""
    best = None
    for s in record.get("steps") or []:
        if s.get("met") and (best is None or s["qps"] > best["qps"]):
            best = s
    return best


def by_mode(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r["mode"]), []).append(r)
    return out


# ---- the command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``runner.py``'s SLO search flags."""
    g = parser.add_argument_group(
        "SLO search",
        "find, per mode and CONN, the highest rate meeting an SLO (QPS is the start rate;"
        " 0 = 100 req/s per connection): runner.py 8 0 30 --baseline --find-max --slo p99=5ms",
    )
    g.add_argument(
        "--find-max",
        action="store_true",
        help="search for the highest request rate that meets --slo, each step a test",
    )
    g.add_argument(
        "--slo",
        type=parse_slo,
        default=None,
        metavar="SLO",
        help="what a step must meet: pNN=DURATION and/or errors=PCT%%, comma separated"
        " (p99=5ms,errors=0.1%%)",
    )
    g.add_argument(
        "--find-max-resolution",
        type=resolution_text,
        default=DEFAULT_RESOLUTION,
        metavar="PCT%",
        help="stop when the highest rate met and the lowest not met are this close"
        " (default: 5%%)",
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-flag rules of the search (``parser.error`` on a conflict)."""
    if not args.find_max:
        if args.slo is not None:
            parser.error("--slo needs --find-max")
        return
    if args.slo is None:
        parser.error("--find-max needs --slo (e.g. --slo p99=5ms)")
    if len(args.qps) != 1:
        parser.error(
            "--find-max takes one QPS, the rate its search starts at"
            " (0 = 100 req/s per connection)"
        )
    if args.repeat != 1:
        parser.error("--find-max runs one search per mode and CONN; --repeat does not apply")
    if args.resume:
        parser.error("--find-max decides each step from the one before; --resume does not apply")


def prepare(args: argparse.Namespace, plan: Plan) -> SearchRun | None:
    """With ``--find-max``: the run's searches, and the plan reduced to each search's first
    step (the start rate, the ``findmax`` label tag); None without it."""
    if not getattr(args, "find_max", False):
        return None
    tests = []
    for t in plan.tests:
        q = t.qps if t.qps > 0 else START_QPS_PER_CONNECTION * t.conn
        first = dataclasses.replace(t, qps=float(q), extra_labels=step_labels(t.extra_labels))
        tests.append(dataclasses.replace(first, labels=step_label(plan.run_id, first, q)))
    return SearchRun(
        dataclasses.replace(plan, tests=tuple(tests)),
        args.slo,
        args.find_max_resolution,
        args.output_dir,
    )
