"""``run_load``: a load test as ``fortio load`` runs one, from options to result."""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

from meshperf.loadgen.options import VERSION, CallPlan, LoadOptions, Target, auto_workers
from meshperf.loadgen.procs import _Interrupt, _run_inprocess, _run_processes
from meshperf.loadgen.result import default_labels, describe_duration, merge_results, print_summary


@dataclasses.dataclass
class RunOutcome:
    """What ``run_load`` returns: the fortio result and how the run ended."""

    result: dict[str, Any]
    interrupted: bool
    samples: list[float] | None = None


def run_load(
    o: LoadOptions, log: TextIO | None = None, on_start: Callable[[], None] | None = None
) -> RunOutcome:
    """Run a load test as ``fortio load`` would; Ctrl-C/SIGTERM end it early (result kept).

    ``on_start`` is called once this function's own SIGINT/SIGTERM handling is in place: from
    then on a signal ends the run early and its result is still returned.

    Raises ``WarmupError`` when warmup fails (unless ``allow_initial_errors``),
    ``ConfigError`` for bad options, ``InterruptedRun`` if stopped before the start.
    """
    log = log if log is not None else sys.stderr
    plan = CallPlan.make(o)
    workers = o.workers or auto_workers(o, plan.threads)
    workers = max(1, min(workers, plan.threads))
    target = Target.parse(o.url)
    labels = o.labels if o.labels is not None else default_labels(target.url)
    id_time = dt.datetime.now().astimezone()
    qps_text = "max" if o.qps <= 0 else f"{o.qps:.9g}"

    def banner() -> None:
        # Printed once warmup passed, so a failed warmup is a single error line.
        print(
            f"Fortio-compatible {VERSION} running at {qps_text} queries per second, "
            f"{plan.threads} connections, {workers} worker process(es), "
            f"for {describe_duration(o)}: {target.url}",
            file=log,
            flush=True,
        )
        if plan.threads < o.connections:
            print(
                f"Lowering number of threads - total call {sum(plan.calls)} -> lowering from "
                f"{o.connections} to {plan.threads} threads",
                file=log,
            )

    intr = _Interrupt()
    old = {s: signal.signal(s, intr) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_start is not None:
            on_start()
        if workers == 1:
            res_list, start_ns, wall = _run_inprocess(o, plan, intr, log, banner)
        else:
            res_list, start_ns, wall = _run_processes(o, plan, workers, intr, log, banner)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    result, samples = merge_results(o, plan, res_list, start_ns, wall, labels, id_time, intr.hit)
    for r in res_list:
        for msg in r["warnings"][:5]:
            print(msg, file=log)
        for why, n in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]:
            print(f"{n} socket error(s): {why}", file=log)
    print_summary(result, o, log)
    return RunOutcome(result, intr.hit, samples)
