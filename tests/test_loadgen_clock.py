"""meshperf.clock: callbacks at absolute instants, never early, in order; the echo server's
early-arming scheduler learns the wakeup latency and still never runs a callback early."""

from __future__ import annotations

import asyncio

import pytest

from meshperf.clock import Scheduler, new_event_loop, now_ns


def run_schedule(early: bool, n: int = 300, gap_ns: int = 1_000_000) -> tuple[list[int], Scheduler]:
    """Lateness (ns) of ``n`` callbacks, each asked ``gap_ns`` after the previous ran."""
    loop = new_event_loop()
    lateness: list[int] = []
    try:
        sched = Scheduler(loop, early=early)
        done: asyncio.Future[None] = loop.create_future()

        def cb(due: int, arg: int) -> None:
            lateness.append(now_ns() - due)
            if arg < n:
                sched.call_at(now_ns() + gap_ns, cb, arg + 1)
            else:
                done.set_result(None)

        sched.call_at(now_ns() + gap_ns, cb, 1)
        loop.run_until_complete(asyncio.wait_for(done, 30))
        sched.close()
    finally:
        loop.close()
    return lateness, sched


@pytest.mark.parametrize("early", [False, True])
def test_callbacks_never_run_before_their_instant(early: bool) -> None:
    lateness, _ = run_schedule(early)
    assert len(lateness) == 300
    assert min(lateness) >= 0


def test_early_scheduler_learns_a_lead_and_is_later_less_often() -> None:
    """Side by side in one run: the early-arming scheduler's median lateness is below the
    plain one's (it arms one learned wakeup latency ahead and spins the rest)."""
    plain, _ = run_schedule(False)
    early, sched = run_schedule(True)
    assert 0 < sched.lead <= Scheduler.MAX_LEAD_NS
    plain.sort()
    early.sort()
    assert early[len(early) // 2] < plain[len(plain) // 2], (early[150], plain[150])


def test_equal_instants_run_in_the_order_asked() -> None:
    loop = new_event_loop()
    seen: list[int] = []
    try:
        sched = Scheduler(loop)
        at = now_ns() + 2_000_000
        for k in range(5):
            sched.call_at(at, lambda due, arg: seen.append(arg), k)
        sched.call_at(at - 1_000_000, lambda due, arg: seen.append(arg), -1)
        loop.run_until_complete(asyncio.sleep(0.02))
        sched.close()
    finally:
        loop.close()
    assert seen == [-1, 0, 1, 2, 3, 4]
