"""Issue 16 item 8: a config file that says one thing twice, or two contradicting things, is
refused with one line naming both, before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import runner
from meshperf.errors import ExitCode


@pytest.fixture(autouse=True)
def _no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("baseline: true\nno-baseline: true\n",
         "'baseline' and 'no-baseline' both set the same option"),
        ("no_serversidecar: false\nserversidecar: true\n",
         "'no_serversidecar' and 'serversidecar' both set the same option"),
        ("output-dir: a\noutput_dir: b\n",
         "'output-dir' and 'output_dir' both set the same option"),
        ("conn: 1\nqps: 10\nconn: 2\n", "line 3: duplicate key 'conn' (first on line 1)"),
        ("baseline: true\nbaseline: false\n", "line 2: duplicate key 'baseline' (first on line 1)"),
    ],
)  # fmt: skip
def test_conflicting_or_duplicate_config_keys_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    code = runner.main(["1", "10", "1", "--config", str(cfg), "--platform", "local", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert out == ""
    assert err.startswith(f"runner.py: error: config {cfg}"), err
    assert message in err.splitlines()[0]


def test_a_config_that_sets_each_option_once_still_works(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("conn: [1, 4]\nqps: 10\nduration: 1\nno-clientsidecar: true\nbaseline: true\n")
    code = runner.main(["--config", str(cfg), "--platform", "local", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "plan: 2 tests on local" in out
    assert "_base " in out and "_both" not in out
