"""docs/kubernetes.md says what the code does: one table per mesh listing exactly the modes that
mesh can give (meshperf.kube.paths), and the ports the manifests really use."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from meshperf.kube import paths

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "kubernetes.md").read_text()
sys.path.insert(0, str(REPO / "manifests"))
import render  # noqa: E402 - manifests/render.py, standard library only
import yaml  # noqa: E402


def mesh_table(mesh: str) -> list[str]:
    section = DOC.split(f"### {mesh}", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([a-z]+)` \|", section, flags=re.M)


def test_one_table_per_mesh_with_exactly_its_modes() -> None:
    for mesh in ("istio", "istio-ambient", "linkerd"):
        assert sorted(mesh_table(mesh)) == sorted(paths.PATHS[mesh]), mesh
        for mode in ("baseline", "serversidecar", "clientonly", "waypoint"):
            if paths.refusal(mesh, mode) is not None:
                section = DOC.split(f"### {mesh}", 1)[1].split("\n### ", 1)[0]
                assert f"`{mode}`" in section and "refused" in section, (mesh, mode)
    assert "Only `baseline`" in DOC.split("### none", 1)[1]


def test_documented_ports_are_the_rendered_ones() -> None:
    ports = DOC.split("## Ports and targets", 1)[1].split("### istio", 1)[0]
    assert f'excludeInboundPorts: "{render.UNCAPTURED_PORTS}"' in ports
    assert f'excludeOutboundPorts:\n"{render.INGRESS_PORTS},{render.UNCAPTURED_PORTS}"' in ports
    for port, target in paths.CLIENTONLY_PORTS.values():
        assert f"**{port} -> {target}**" in ports
    # every port the section names is one the manifests use (issue 11 item 11: they were not)
    args = render.build_parser().parse_args(
        ["--out-dir", "unused", "--mesh", "istio", "--pod-cidrs", "10.0.0.0/8"]
    )
    docs = list(yaml.safe_load_all(render.render(args)["fortio.yaml"]))
    used = {int(p) for p in render.INGRESS_PORTS.split(",")} | {
        port[key]
        for d in docs
        if d["kind"] == "Service"
        for port in d["spec"]["ports"]
        for key in ("port", "targetPort")
    }
    named = {int(n) for n in re.findall(r"\b(80[0-9]{2}|80)\b", ports)}
    assert named <= used, named - used
    assert "sleep 3600`" not in DOC.replace("with\n   `sleep 3600`", "")
