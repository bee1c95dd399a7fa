"""Every command the README shows still works as written.

The two set-up commands are make targets; the rest are the scripts' own command lines. Runner
lines run with --dry-run (a real run is the end-to-end test's job); the collect and chart lines
run for real on sample fortio results (tests/fortio_data.py); cluster lines run with DRY_RUN=1.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fortio_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = fortio_data.samples_dir()
README = (ROOT / "README.md").read_text()


def _blocks() -> list[str]:
    """Lines of the README's ```bash blocks, comments stripped."""
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


LINES = _blocks()


def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_readme_names_the_two_setup_commands_and_make_has_them() -> None:
    assert "make benchmark" in LINES and "make test" in LINES
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^benchmark:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize(
    "line", [ln for ln in LINES if "runner/runner.py" in ln and "[flags]" not in ln]
)
def test_runner_lines_parse_and_plan(line: str, tmp_path: Path) -> None:
    argv = shlex.split(line)
    argv = [sys.executable if a in ("python", ".venv/bin/python") else a for a in argv]
    argv = [str(ROOT / a) if a.startswith("runner/") else a for a in argv]
    # Planning only; the platform is forced to local so no cluster is probed.
    argv += ["--dry-run", "--platform", "local", "--output-dir", str(tmp_path / "out")]
    proc = _run(argv, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^plan: {expected_tests(line)} tests on local ", proc.stdout, re.M), (
        line, proc.stdout[:300],
    )  # fmt: skip


def expected_tests(line: str) -> int:
    """The README's rule, worked out from the line itself: every CONN x QPS combination once
    per selected mode (both by default, plus --baseline/--serversidecar/--ingress), times
    --repeat."""
    words = shlex.split(line)
    args = [w for w in words[words.index(next(w for w in words if w.endswith("runner.py"))) + 1:]]
    conns, qpss = args[0].split(","), args[1].split(",")
    modes = 1 + sum(f in args for f in ("--baseline", "--serversidecar", "--ingress",
                                        "--clientonly")) - ("--no-clientsidecar" in args)
    repeat = int(args[args.index("--repeat") + 1]) if "--repeat" in args else 1
    return len(conns) * len(qpss) * modes * repeat


def test_collect_and_chart_lines_run_on_real_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for f in FIXTURES.glob("http-*.json"):
        shutil.copy(f, results / f.name)
    lines = [ln for ln in LINES if ln.startswith(".venv/bin/python runner/")]
    assert any("fortio.py results --output results-summary" in ln for ln in lines)
    assert any("graph.py results-summary.csv p99" in ln for ln in lines)
    for line in lines:
        argv = shlex.split(line)
        argv[0] = sys.executable
        argv[1] = str(ROOT / argv[1])
        proc = _run(argv, tmp_path)
        assert proc.returncode == 0, (line, proc.stderr)
    assert (tmp_path / "results-summary.csv").read_text().count("\n") == 1 + 3  # header + 3
    (html,) = tmp_path.glob("results-summary*p99*.html")
    assert html.stat().st_size > 10_000


@pytest.mark.parametrize(
    "line", [ln for ln in LINES if "istio-install/" in ln or "setup_test.sh" in ln]
)
def test_cluster_lines_dry_run(line: str, tmp_path: Path) -> None:
    words = shlex.split(line)
    env = dict(os.environ, DRY_RUN="1", HOME=str(tmp_path))
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    words[0] = str(ROOT / words[0])
    proc = _run(words, ROOT, env)
    assert proc.returncode == 0, proc.stderr
    planned = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ ")]
    # What each script is for must be among the commands it would run.
    want = {
        "create_cluster.sh": r"gcloud container clusters create \S+ --project my-project",
        "setup_istio.sh": r"istioctl install ",
        "setup_test.sh": r"kubectl .*apply -f -",
    }[Path(words[0]).name]
    assert any(re.search(want, ln) for ln in planned), (line, planned)
