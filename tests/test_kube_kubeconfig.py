"""The kubeconfig is merged once, kubectl's way, for both the --platform auto probe and the
kubernetes client: a KUBECONFIG list whose second file names a CA by a path relative to
itself works for both (kubectl resolves such paths against the file that names them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fake_kube import FakeKube
from meshperf import choose
from meshperf.kube import cluster as kc
from meshperf.platform import RunOptions


@pytest.fixture
def fk() -> Iterator[FakeKube]:
    with FakeKube() as f:
        yield f


def split_kubeconfig(fk: FakeKube, tmp_path: Path) -> list[Path]:
    """File 1: the current context and the user. File 2 (another directory): the cluster,
    its CA in a file next to it, named relatively."""
    one, two = tmp_path / "a" / "config", tmp_path / "b" / "config"
    one.parent.mkdir()
    two.parent.mkdir()
    (two.parent / "ca.crt").write_bytes(fk.ca_pem)
    one.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "perf",
        "contexts": [{"name": "perf", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": fk.token}}],
    }))  # fmt: skip
    two.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": fk.url,
                                               "certificate-authority": "ca.crt"}}],
        # a later file never overrides what an earlier one set
        "contexts": [{"name": "perf", "context": {"cluster": "nope", "user": "nope"}}],
    }))  # fmt: skip
    return [one, two]


def test_merged_resolves_relative_paths_against_their_file(fk: FakeKube, tmp_path: Path) -> None:
    files = split_kubeconfig(fk, tmp_path)
    cfg, problem = choose.merged(files)
    assert problem is None
    (cluster,) = cfg["clusters"]
    assert cluster["cluster"]["certificate-authority"] == str(files[1].parent / "ca.crt")
    assert cfg["contexts"] == [{"name": "perf", "context": {"cluster": "c", "user": "u"}}]


def test_auto_probe_and_client_agree_on_a_split_kubeconfig(
    fk: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = split_kubeconfig(fk, tmp_path)
    monkeypatch.chdir(tmp_path)  # the CA is not found relative to the working directory
    kubeconfig = os.pathsep.join(map(str, files))
    choice = choose.choose_platform("auto", {"KUBECONFIG": kubeconfig})
    assert choice.platform == "kubernetes", choice.reason
    assert choice.kubeconfig == kubeconfig and choice.context == "perf"
    conn = kc.connect(RunOptions(platform="kubernetes", kubeconfig=choice.kubeconfig))
    try:
        assert conn.context == "perf"
        assert kc.Cluster(conn, "twopods").version() == fk.version["gitVersion"]
    finally:
        conn.api.close()


def test_the_client_reads_the_same_files_auto_looked_at(
    fk: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = split_kubeconfig(fk, tmp_path)
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, [tmp_path / "gone", *files])))
    assert kc.resolve_kubeconfig(RunOptions()) == os.pathsep.join(map(str, files))
