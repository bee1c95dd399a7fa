"""Ctrl-C during ``--find-max``: the step in flight stops, the steps that finished stay, and
the run file says the search was unfinished; no process is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"


@pytest.mark.slow
def test_interrupted_search_keeps_its_steps(tmp_path: Path) -> None:
    out = tmp_path / "results"
    mark = tmp_path / f"tmp-{uuid.uuid4().hex[:8]}"
    mark.mkdir()
    env = dict(os.environ, TMPDIR=str(mark), KUBECONFIG=str(tmp_path / "none"))
    cmd = [sys.executable, str(RUNNER), "2", "0", "2", "--mesh", "none", "--baseline",
           "--find-max", "--slo", "p99=50ms", "--platform", "local", "--output-dir", str(out),
           "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # Wait until the first step's result is on disk, then stop the second step midway.
        while not [p for p in out.glob("*.json") if not p.name.startswith("run-")]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no step finished"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    (run_file,) = out.glob("run-*.json")
    run = json.loads(run_file.read_text())
    assert run["status"] == "interrupted"
    (rec,) = run["slo_search"]
    assert rec["outcome"] == "unfinished"
    assert rec["reason"] == "the run stopped before this search ended"
    assert rec["steps"] and all((out / s["file"]).is_file() for s in rec["steps"])
    assert "SLO search" in stdout
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("TMPDIR") == str(mark):
                left.append(p.info["cmdline"])
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    assert left == []
