"""Where the threads run: in this process (one event loop), or in several worker processes
that start on a common instant and hand their measurements back through pipes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from meshperf.clock import libc, new_event_loop
from meshperf.clock import now_ns as _now
from meshperf.errors import ConfigError, MeshperfError
from meshperf.goduration import SECOND
from meshperf.loadgen.options import CallPlan, InterruptedRun, LoadOptions, WarmupError
from meshperf.loadgen.worker import Worker


async def _worker_async(
    o: LoadOptions,
    plan: CallPlan,
    tids: Sequence[int],
    control: Callable[[str, Any], None],
    wait_go: Callable[[Worker], asyncio.Future[int | None]],
) -> dict[str, Any]:
    w = Worker(o, plan, tids)
    try:
        await w.resolve()
        failures = [] if o.exactly else await w.do_warmup()
        control("ready", {"failures": failures[:1], "count": len(failures)})
        start = await wait_go(w)
        if start is None:
            return w.result()
        await w.run(start)
        return w.result()
    finally:
        w.close()
        if o.grpc:
            from meshperf.loadgen.grpcload import close_channels

            await close_channels(w)


def _child_main(
    o: LoadOptions, plan: CallPlan, tids: list[int], conn: multiprocessing.connection.Connection
) -> None:
    """A worker process: warm up, report ready, wait for the common start, run, send results."""
    with contextlib.suppress(Exception):
        libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the parent
    # Ctrl-C, and a SIGTERM sent to the whole process group, reach the workers too; only the
    # parent decides: it sends "stop", and the workers hand back what they measured.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    state: dict[str, Any] = {"worker": None, "go": None, "stopped": False}

    def on_msg() -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = ("stop", None)
        kind = msg[0]
        if kind == "go" and state["go"] is not None and not state["go"].done():
            state["go"].set_result(msg[1])
        elif kind == "stop":
            state["stopped"] = True
            if state["go"] is not None and not state["go"].done():
                state["go"].set_result(None)
            if state["worker"] is not None:
                state["worker"].stop()

    def wait_go(w: Worker) -> asyncio.Future[int | None]:
        state["worker"] = w
        fut: asyncio.Future[int | None] = loop.create_future()
        state["go"] = fut
        if state["stopped"]:
            fut.set_result(None)
        return fut

    def control(kind: str, payload: Any) -> None:
        conn.send((kind, payload))

    loop.add_reader(conn.fileno(), on_msg)
    try:
        res = loop.run_until_complete(_worker_async(o, plan, tids, control, wait_go))
        conn.send(("result", res))
    except MeshperfError as e:
        conn.send(("error", str(e)))
    except BaseException as e:  # a worker must always answer, or the parent waits forever
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        loop.close()
        conn.close()


class _Interrupt:
    """SIGINT/SIGTERM while a run is in flight: remember it, let the run wind down."""

    def __init__(self) -> None:
        self.hit = False
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.hit = True
        for cb in list(self.callbacks):
            cb()


def _warmup_check(
    o: LoadOptions, ready: Sequence[dict[str, Any]], log: TextIO, banner: Callable[[], None]
) -> None:
    n = sum(r["count"] for r in ready)
    if not n:
        banner()
        return
    first = next(r["failures"][0] for r in ready if r["failures"])
    if not o.allow_initial_errors:
        raise WarmupError(
            f"warmup call failed on {n} connection(s): {first} for {o.url}",
            hint="use -allow-initial-errors to run anyway",
        )
    banner()
    print(f"warmup: {n} connection(s) failed ({first}); going on (-allow-initial-errors)", file=log)


def _run_inprocess(
    o: LoadOptions, plan: CallPlan, intr: _Interrupt, log: TextIO, banner: Callable[[], None]
) -> tuple[list[dict[str, Any]], int, dt.datetime]:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    holder: dict[str, Any] = {"start": 0, "wall": None}

    def control(kind: str, payload: Any) -> None:
        if kind == "ready":
            _warmup_check(o, [payload], log, banner)

    def wait_go(w: Worker) -> asyncio.Future[int | None]:
        fut: asyncio.Future[int | None] = loop.create_future()
        if intr.hit:
            fut.set_result(None)
            return fut

        def stop_soon() -> None:
            # A repeated Ctrl-C may come while the loop is already closing: the run is over.
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(w.stop)

        intr.callbacks.append(stop_soon)
        holder["wall"] = dt.datetime.now().astimezone()
        holder["start"] = _now()
        fut.set_result(holder["start"])
        return fut

    try:
        res = loop.run_until_complete(
            _worker_async(o, plan, list(range(plan.threads)), control, wait_go)
        )
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    if holder["wall"] is None:
        raise InterruptedRun("interrupted before the run started")
    return [res], holder["start"], holder["wall"]


def _run_processes(
    o: LoadOptions,
    plan: CallPlan,
    workers: int,
    intr: _Interrupt,
    log: TextIO,
    banner: Callable[[], None],
) -> tuple[list[dict[str, Any]], int, dt.datetime]:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    procs: list[Any] = []
    pipes: list[multiprocessing.connection.Connection] = []
    try:
        for k in range(workers):
            tids = list(range(k, plan.threads, workers))
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(o, plan, tids, child_end), daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            pipes.append(parent_end)

        def collect(kind: str, deadline: float | None) -> list[Any]:
            out: list[Any] = [None] * len(pipes)
            waiting = set(range(len(pipes)))
            while waiting:
                if deadline is not None and time.monotonic() > deadline:
                    raise ConfigError(f"load generator workers did not report {kind!r} in time")
                ready = multiprocessing.connection.wait([pipes[k] for k in waiting], timeout=0.2)
                for r in ready:
                    k = pipes.index(r)  # type: ignore[arg-type]
                    try:
                        msg = pipes[k].recv()
                    except (EOFError, OSError):
                        if kind != "result":
                            raise ConfigError(f"load generator worker {k} died") from None
                        # Mid-run: keep what the other workers measured.
                        print(f"load generator worker {k} died; its calls are lost", file=log)
                        waiting.discard(k)
                        continue
                    if msg[0] == "error":
                        raise ConfigError(msg[1])
                    if msg[0] == kind:
                        out[k] = msg[1]
                        waiting.discard(k)
                if intr.hit and kind == "ready":
                    raise InterruptedRun("interrupted before the run started")
            return out

        warm_limit = time.monotonic() + o.timeout_ns / SECOND + 30
        ready = collect("ready", warm_limit)
        _warmup_check(o, ready, log, banner)
        # A common start a little ahead, so every worker begins on the same schedule.
        start_ns = _now() + 20 * 1000 * 1000
        wall = dt.datetime.now().astimezone() + dt.timedelta(milliseconds=20)
        for pipe in pipes:
            pipe.send(("go", start_ns))

        def stop_all() -> None:
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send(("stop", None))

        intr.callbacks.append(stop_all)
        if intr.hit:
            stop_all()
        results = [r for r in collect("result", None) if r is not None]
        if not results:
            raise ConfigError("every load generator worker died during the run")
        return results, start_ns, wall
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
