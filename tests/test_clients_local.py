"""``runner.py --clients 3`` on the local platform: three real generator processes load the
echo server together, and their results go through the same merge as the cluster's pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from meshperf.histogram import calc_percentile

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"


@pytest.mark.slow
def test_three_local_generators_merge(tmp_path: Path) -> None:
    out = tmp_path / "results"
    mark = tmp_path / f"tmp-{uuid.uuid4().hex[:8]}"
    mark.mkdir()
    env = dict(os.environ, TMPDIR=str(mark), KUBECONFIG=str(tmp_path / "none"))
    cmd = [sys.executable, str(RUNNER), "6", "300", "2", "--mesh", "none", "--baseline",
           "--clients", "3", "--platform", "local", "--output-dir", str(out), "-q"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr  # 3: a loaded machine's errors
    (merged_file,) = [p for p in out.glob("*.json") if not p.name.startswith("run-")]
    merged = json.loads(merged_file.read_text())
    block = merged["meshperf"]
    assert [c["name"] for c in block["clients"]] == ["loadgen-0", "loadgen-1", "loadgen-2"]
    own = [json.loads((out / c["file"]).read_text()) for c in block["clients"]]
    # Each generator ran 2 connections at 100 req/s: its share of 6 at 300.
    assert [o["NumThreads"] for o in own] == [2, 2, 2]
    assert [o["RequestedQPS"] for o in own] == ["100", "100", "100"]
    dh = merged["DurationHistogram"]
    assert dh["Count"] == sum(o["DurationHistogram"]["Count"] for o in own) > 0
    assert dh["Min"] == min(o["DurationHistogram"]["Min"] for o in own)
    assert dh["Max"] == max(o["DurationHistogram"]["Max"] for o in own)
    # Bucket by bucket, the merged counts are the clients' counts added up.
    expected: dict[float, int] = {}
    for o in own:
        for b in o["DurationHistogram"]["Data"][1:]:  # the first bucket starts at its Min
            expected[b["Start"]] = expected.get(b["Start"], 0) + b["Count"]
    got = {b["Start"]: b["Count"] for b in dh["Data"][1:]}
    for start, n in got.items():
        assert n >= expected.get(start, 0)
    assert sum(b["Count"] for b in dh["Data"]) == dh["Count"]
    p50 = calc_percentile(dh, 50)
    assert min(calc_percentile(o["DurationHistogram"], 50) for o in own) <= p50
    assert p50 <= max(calc_percentile(o["DurationHistogram"], 50) for o in own)
    assert merged["NumThreads"] == 6 and merged["RequestedQPS"] == "300"
    # Every generator was sampled, each under its own name.
    res = block["resources"]
    assert {f"fortio_deployment_loadgen_client{i}" for i in range(3)} <= set(res)
    # Nothing of the clients' files is read as a result of its own.
    assert not list(out.glob("*_client*.json"))
