"""One flame-graph module for both platforms: the same ``perf script`` text folds the same way
whichever platform recorded it (issue 10: they used to fold with different rules)."""

from __future__ import annotations

from pathlib import Path

from meshperf import flamegraph
from meshperf.kube import perf as kube_perf
from meshperf.local import perf as local_perf

SCRIPT = """\
# ========
# captured on: a header perf script prints with some options
envoy worker 17/19 [001] 12345.678901:   10101010 cpu-clock:
\t    55d0a1b2c3d4 Envoy::Http::ConnMgr::onData(Buffer::Instance&, bool)+0x24 (/usr/local/bin/envoy)
\t    55d0a1b20000 main+0x1 (/usr/local/bin/envoy)

envoy worker 17/19 [001] 12345.688901:   10101010 cpu-clock:
\t    7f0000001000 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    7f0000001100 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    ffffffff81000000 do_syscall_64
\t    55d0a1b20000 main+0x1 (/usr/local/bin/envoy)
"""


def test_fold_rules() -> None:
    assert flamegraph.fold(SCRIPT) == {
        # spaces in the command become "_", offsets go, as stackcollapse-perf.pl does
        "envoy_worker;main;Envoy::Http::ConnMgr::onData(Buffer::Instance&, bool)": 1,
        # a frame without an object file is kept; a run of unknown frames is one [file] frame
        "envoy_worker;main;do_syscall_64;[libc.so.6]": 1,
    }
    assert flamegraph.fold(SCRIPT.splitlines()) == flamegraph.fold(SCRIPT)


def test_both_platforms_use_it() -> None:
    assert local_perf.fold is flamegraph.fold and local_perf.render_svg is flamegraph.render_svg
    assert kube_perf.PERF_FREQ == local_perf.FREQUENCY == flamegraph.FREQUENCY == 99
    assert not hasattr(kube_perf, "fold_perf_script")
    assert not hasattr(kube_perf, "render_flamegraph")


def test_write_puts_the_folded_stacks_beside_the_svg(tmp_path: Path) -> None:
    folded = flamegraph.fold(SCRIPT)
    svg = flamegraph.write(folded, tmp_path / "perf" / "t.svg", "envoy <t>")
    assert svg.read_text().startswith("<svg") and "envoy &lt;t&gt;" in svg.read_text()
    assert svg.with_suffix(".folded").read_text().splitlines() == [
        "envoy_worker;main;Envoy::Http::ConnMgr::onData(Buffer::Instance&, bool) 1",
        "envoy_worker;main;do_syscall_64;[libc.so.6] 1",
    ]
