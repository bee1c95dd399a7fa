"""``CLIENTS=N ./setup_test.sh``: N fortioclient pods, each kept off the server's node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _deployments(out: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((out / "fortio.yaml").read_text()) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def test_render_three_clients_one_server(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "manifests" / "render.py"), "--out-dir", str(tmp_path),
         "--mesh", "none", "--clients", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    deps = _deployments(tmp_path)
    assert deps["fortioclient"]["spec"]["replicas"] == 3
    assert deps["fortioserver"]["spec"]["replicas"] == 1
    anti = deps["fortioclient"]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"] == {"app": "fortioserver"}
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_setup_test_passes_clients_and_refuses_nonsense(tmp_path: Path) -> None:
    env = dict(os.environ, DRY_RUN="1", MESH="none", CLIENTS="4", RENDER_DIR=str(tmp_path))
    env["KUBECONFIG"] = str(tmp_path / "none")
    ok = subprocess.run([str(REPO / "setup_test.sh")], env=env, capture_output=True, text=True,
                        timeout=120, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert _deployments(tmp_path)["fortioclient"]["spec"]["replicas"] == 4
    for bad in ("0", "65", "3x"):
        env["CLIENTS"] = bad
        no = subprocess.run([str(REPO / "setup_test.sh")], env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
        assert no.returncode != 0
        assert f"CLIENTS='{bad}' is not a number of client pods, 1 to 64" in no.stderr
