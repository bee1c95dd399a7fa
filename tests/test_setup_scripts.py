"""Tests of the cluster set-up scripts: istio-install/, linkerd/, setup_test.sh, manifests/.

No cluster exists here, so the scripts run for real against stub ``kubectl``, ``istioctl``,
``linkerd``, ``gcloud``, ``kind`` and ``curl`` (tests/stubs/stub.py) that log their argv and
stdin; everything else (bash, coreutils, tar, sha256sum, python3 for rendering) is real. The
PATH holds only the stubs and a directory of links to those real tools, so the real gcloud or
kubectl of a developer machine can never run and no download ever happens.
Rendered manifests are checked against the Kubernetes schemas (kubernetes-validate) and Istio
resources against the fields Istio's CRDs require.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import free_port
from needs import missing, skip_unless
from tlsfiles import server_tls_files

REPO = Path(__file__).resolve().parents[1]
STUB = REPO / "tests" / "stubs" / "stub.py"
SCRIPTS = [
    "istio-install/create_cluster.sh",
    "istio-install/setup_istio.sh",
    "istio-install/setup_prometheus.sh",
    "istio-install/telemetry.sh",
    "istio-install/lib.sh",
    "linkerd/setup_linkerd.sh",
    "setup_test.sh",
]
MESHES = ("istio", "istio-ambient", "linkerd", "none")
# Real tools the scripts use; linked into a directory that becomes the rest of PATH.
SYSTEM_TOOLS = (
    "bash",
    "sh",
    "env",
    "cat",
    "mkdir",
    "mktemp",
    "rm",
    "dirname",
    "basename",
    "sed",
    "awk",
    "tr",
    "sleep",
    "uname",
    "install",
    "tar",
    "gzip",
    "sha256sum",
    "chmod",
    "cp",
    "head",
    "timeout",
)
K8S_VERSION = kubernetes_validate.latest_version()
# Release asset names use Go's architecture names (as the scripts map them).
_MACHINE = platform.machine().lower()
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(_MACHINE, _MACHINE)


# --------------------------------------------------------------------------------------------
# Harness: stub commands, restricted PATH, running a script


@pytest.fixture(scope="session")
def sysbin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sysbin")
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by the set-up scripts"
        (d / tool).symlink_to(found)
    (d / "python3").symlink_to(os.path.realpath(sys.executable))
    return d


class Stubs:
    """A directory of stub commands, their rules and their call log."""

    def __init__(self, root: Path, sysbin: Path, names: tuple[str, ...]) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls.jsonl"
        self.log.touch()
        self.rules_file = root / "rules.json"
        self.rules: list[dict[str, Any]] = []
        self.sysbin = sysbin
        self.kubectl_timeout = "60s"
        for name in names:
            self.add(name)

    def add(self, name: str) -> None:
        wrapper = self.bin / name
        wrapper.write_text(
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(STUB))} "
            f'{shlex.quote(name)} "$@"\n'
        )
        wrapper.chmod(0o755)

    def remove(self, name: str) -> None:
        (self.bin / name).unlink()

    def rule(self, cmd: str, args: list[str], **kw: Any) -> None:
        self.rules.append({"cmd": cmd, "args": args, **kw})

    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        """The logged calls; kubectl's are checked for a request timeout, which is then dropped
        from their argv so that tests compare what the call does."""
        lines = self.log.read_text().splitlines()
        out = [json.loads(line) for line in lines]
        for c in out:
            if c["cmd"] == "kubectl":
                c["argv"] = without_request_timeout(c["argv"], self.kubectl_timeout)
        return [c for c in out if cmd is None or c["cmd"] == cmd]

    def argvs(self, cmd: str) -> list[list[str]]:
        return [c["argv"] for c in self.calls(cmd)]

    def run(
        self, script: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.rules_file.write_text(json.dumps(self.rules))
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        full_env = {
            "PATH": f"{self.bin}:{self.sysbin}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "STUB_LOG": str(self.log),
            "STUB_RULES": str(self.rules_file),
            "LB_WAIT": "0",
            **(env or {}),
        }
        self.kubectl_timeout = full_env.get("KUBECTL_TIMEOUT", "60s")
        return subprocess.run(
            [str(REPO / script), *args],
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def stubs(tmp_path: Path, sysbin: Path) -> Stubs:
    return Stubs(
        tmp_path, sysbin, ("kubectl", "istioctl", "helm", "linkerd", "gcloud", "kind", "curl")
    )


def one_line_error(proc: subprocess.CompletedProcess[str], prog: str, code: int) -> str:
    """The error line; stderr may also hold the ``+ cmd`` trace of commands that ran before."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("+ ")]
    assert len(lines) == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == lines[0]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# Commands that run as they are; everything else a script runs talks to a cluster or a cloud
# and must be under coreutils timeout (istio-install/lib.sh).
UNLIMITED = ("curl", "tar", "mkdir", "install")


def _seconds(duration: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600}.get(duration[-1])
    return int(duration[:-1]) * unit if unit else int(duration)


def without_request_timeout(argv: list[str], kubectl_timeout: str = "60s") -> list[str]:
    """kubectl's argv without ``--request-timeout``, after checking that it is there, first.

    ``rollout status`` and ``wait`` are the exception: they carry their own ``--timeout``.
    """
    if ("rollout" in argv or "wait" in argv) and any(a.startswith("--timeout=") for a in argv):
        assert not any(a.startswith("--request-timeout") for a in argv), argv
        return argv
    assert argv[:1] == [f"--request-timeout={kubectl_timeout}"], argv
    return argv[1:]


def unlimited(cmd: list[str], kubectl_timeout: str = "60s", cli_timeout: str = "20m") -> list[str]:
    """A printed command without its time limits, after checking that they are the right ones."""
    name = cmd[0].rsplit("/", 1)[-1]
    if name in UNLIMITED:
        return cmd
    assert cmd[:4] == ["timeout", "--foreground", "-k", "10s"], cmd
    limit, inner = cmd[4], cmd[5:]
    if inner[0] != "kubectl":
        assert limit == cli_timeout, cmd
        return inner
    argv = without_request_timeout(inner[1:], kubectl_timeout)
    if argv == inner[1:]:
        (wait,) = [a.removeprefix("--timeout=") for a in argv if a.startswith("--timeout=")]
        assert limit == f"{_seconds(wait) + _seconds(kubectl_timeout)}s", cmd
    else:
        assert limit == f"{2 * _seconds(kubectl_timeout)}s", cmd
    return ["kubectl", *argv]


def plan(stdout: str, kubectl_timeout: str = "60s", cli_timeout: str = "20m") -> list[list[str]]:
    """The commands a DRY_RUN printed (``+ cmd``; pipes split into their commands), each checked
    for its time limit and given without it."""
    cmds = []
    for line in stdout.splitlines():
        if line.startswith("+ "):
            for part in line[2:].split(" | "):
                cmds.append(unlimited(shlex.split(part), kubectl_timeout, cli_timeout))
    return cmds


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --------------------------------------------------------------------------------------------
# Istio resources: the fields Istio's CRDs require (a subset of their OpenAPI schemas, with
# unknown keys rejected where meshperf writes them, so that typos fail here, not on a cluster)

_STR = {"type": "string"}
_STRLIST = {"type": "array", "items": _STR}
_PORT = {
    "type": "object",
    "required": ["number", "protocol", "name"],
    "additionalProperties": False,
    "properties": {
        "number": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"enum": ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]},
        "name": _STR,
        "targetPort": {"type": "integer"},
    },
}
_DESTINATION = {
    "type": "object",
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": _STR,
        "subset": _STR,
        "port": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"number": {"type": "integer", "minimum": 1, "maximum": 65535}},
        },
    },
}
_PROVIDERS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {"name": _STR},
    },
}
_MODE = {"enum": ["CLIENT_AND_SERVER", "CLIENT", "SERVER"]}
_K8S_COMPONENT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": _STR,
        "namespace": _STR,
        "enabled": {"type": "boolean"},
        "label": {"type": "object"},
        "k8s": {"type": "object"},
    },
}
ISTIO_SPECS: dict[tuple[str, str], dict[str, Any]] = {
    ("networking.istio.io/v1", "Gateway"): {
        "type": "object",
        "required": ["servers"],
        "additionalProperties": False,
        "properties": {
            "selector": {"type": "object", "additionalProperties": _STR},
            "servers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port", "hosts"],
                    "additionalProperties": False,
                    "properties": {
                        "port": _PORT,
                        "hosts": {**_STRLIST, "minItems": 1},
                        "name": _STR,
                        "bind": _STR,
                        "tls": {"type": "object"},
                    },
                },
            },
        },
    },
    ("networking.istio.io/v1", "VirtualService"): {
        "type": "object",
        "required": ["hosts"],
        "additionalProperties": False,
        "properties": {
            "hosts": {**_STRLIST, "minItems": 1},
            "gateways": _STRLIST,
            "http": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": _STR,
                        "match": {"type": "array"},
                        "route": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["destination"],
                                "additionalProperties": False,
                                "properties": {
                                    "destination": _DESTINATION,
                                    "weight": {"type": "integer"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("security.istio.io/v1", "PeerAuthentication"): {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "selector": {"type": "object"},
            "mtls": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"mode": {"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}},
            },
            "portLevelMtls": {"type": "object"},
        },
    },
    ("telemetry.istio.io/v1", "Telemetry"): {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "selector": {"type": "object"},
            "metrics": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "providers": _PROVIDERS,
                        "reportingInterval": _STR,
                        "overrides": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "disabled": {"type": "boolean"},
                                    "tagOverrides": {"type": "object"},
                                    "match": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "metric": {
                                                "enum": [
                                                    "ALL_METRICS",
                                                    "REQUEST_COUNT",
                                                    "REQUEST_DURATION",
                                                    "REQUEST_SIZE",
                                                    "RESPONSE_SIZE",
                                                    "TCP_OPENED_CONNECTIONS",
                                                    "TCP_CLOSED_CONNECTIONS",
                                                    "TCP_SENT_BYTES",
                                                    "TCP_RECEIVED_BYTES",
                                                    "GRPC_REQUEST_MESSAGES",
                                                    "GRPC_RESPONSE_MESSAGES",
                                                ]
                                            },
                                            "customMetric": _STR,
                                            "mode": _MODE,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "accessLogging": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "providers": _PROVIDERS,
                        "disabled": {"type": "boolean"},
                        "match": {"type": "object", "properties": {"mode": _MODE}},
                        "filter": {"type": "object", "properties": {"expression": _STR}},
                    },
                },
            },
        },
    },
    # networking/v1 DestinationRule (istio/api networking/v1alpha3/destination_rule.proto)
    ("networking.istio.io/v1", "DestinationRule"): {
        "type": "object",
        "required": ["host"],
        "additionalProperties": False,
        "properties": {
            "host": _STR,
            "trafficPolicy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "portLevelSettings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {
                                    "type": "object",
                                    "required": ["number"],
                                    "additionalProperties": False,
                                    "properties": {"number": {"type": "integer"}},
                                },
                                "tls": {
                                    "type": "object",
                                    "required": ["mode"],
                                    "properties": {
                                        "mode": {
                                            "enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
                                        }
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
    ("install.istio.io/v1alpha1", "IstioOperator"): {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "profile": _STR,
            "hub": _STR,
            "tag": _STR,
            "revision": _STR,
            "namespace": _STR,
            "compatibilityVersion": _STR,
            "values": {"type": "object"},
            "unvalidatedValues": {"type": "object"},
            "meshConfig": {
                "type": "object",
                "properties": {
                    "accessLogFile": _STR,
                    "enableTracing": {"type": "boolean"},
                    "defaultConfig": {
                        "type": "object",
                        "properties": {"concurrency": {"type": "integer", "minimum": 0}},
                    },
                },
            },
            "components": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "base": _K8S_COMPONENT,
                    "pilot": _K8S_COMPONENT,
                    "cni": _K8S_COMPONENT,
                    "ztunnel": _K8S_COMPONENT,
                    "ingressGateways": {
                        "type": "array",
                        "items": {**_K8S_COMPONENT, "required": ["name"]},
                    },
                    "egressGateways": {
                        "type": "array",
                        "items": {**_K8S_COMPONENT, "required": ["name"]},
                    },
                },
            },
        },
    },
}


def istio_errors(doc: dict[str, Any]) -> list[str]:
    """Problems of one Istio resource; [] when it has what Istio's CRD requires."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in ISTIO_SPECS:
        return [f"unknown Istio apiVersion/kind {key}"]
    errors = []
    meta = doc.get("metadata") or {}
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        errors.append("metadata.name missing")
    if not isinstance(doc.get("spec"), dict):
        return [*errors, "spec missing"]
    validator = jsonschema.Draft7Validator(ISTIO_SPECS[key])
    for err in validator.iter_errors(doc["spec"]):
        errors.append(f"spec.{'.'.join(map(str, err.absolute_path))}: {err.message}")
    return errors


def validate_doc(doc: dict[str, Any]) -> None:
    """Kubernetes schema (strict) for core kinds, the Istio CRD check for Istio kinds."""
    if ".istio.io/" in doc.get("apiVersion", ""):
        assert istio_errors(doc) == [], (doc.get("kind"), istio_errors(doc))
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_istio_check_rejects_what_istio_would() -> None:
    gw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "g"},
        "spec": {
            "servers": [
                {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
            ]
        },
    }
    assert istio_errors(gw) == []
    no_protocol = json.loads(json.dumps(gw))
    del no_protocol["spec"]["servers"][0]["port"]["protocol"]
    assert any("protocol" in e for e in istio_errors(no_protocol))
    typo = json.loads(json.dumps(gw))
    typo["spec"]["server"] = typo["spec"].pop("servers")
    assert istio_errors(typo)
    pa = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default"},
        "spec": {"mtls": {"mode": "STRICTER"}},
    }
    assert any("STRICTER" in e for e in istio_errors(pa))
    assert istio_errors({**pa, "apiVersion": "security.istio.io/v2"})
    nameless = {**pa, "metadata": {}, "spec": {"mtls": {"mode": "STRICT"}}}
    assert istio_errors(nameless) == ["metadata.name missing"]


# --------------------------------------------------------------------------------------------
# Static checks


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script: str) -> None:
    proc = subprocess.run(
        ["shellcheck", "-x", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", [s for s in SCRIPTS if not s.endswith("lib.sh")])
def test_scripts_follow_the_shell_style(script: str) -> None:
    text = (REPO / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -Eeuo pipefail" in text
    assert os.access(REPO / script, os.X_OK)


def test_static_manifests_validate() -> None:
    kinds = []
    for name in (
        "gke-ambient-quota.yaml",
        "prometheus.yaml",
        "perf-overlay.yaml",
        "perf-overlay-ambient.yaml",
        "telemetry-off.yaml",
    ):
        for doc in load_docs(REPO / "istio-install" / name):
            validate_doc(doc)
            kinds.append(doc["kind"])
    assert kinds.count("IstioOperator") == 2
    assert {
        "ResourceQuota",
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "Telemetry",
    } <= set(kinds)


def test_perf_overlays_set_the_perf_knobs() -> None:
    for name in ("perf-overlay.yaml", "perf-overlay-ambient.yaml"):
        (op,) = load_docs(REPO / "istio-install" / name)
        mesh = op["spec"]["meshConfig"]
        assert mesh["accessLogFile"] == ""
        assert mesh["defaultConfig"]["concurrency"] == 2
        gateways = op["spec"]["components"]["ingressGateways"]
        assert [g["name"] for g in gateways if g["enabled"]] == ["istio-ingressgateway"]
    (sidecar,) = load_docs(REPO / "istio-install" / "perf-overlay.yaml")
    assert sidecar["spec"]["values"]["global"]["proxy"]["resources"]["requests"]["cpu"]


def test_telemetry_off_disables_metrics_and_access_logs() -> None:
    (doc,) = load_docs(REPO / "istio-install" / "telemetry-off.yaml")
    assert doc["metadata"]["namespace"] == "istio-system"  # root namespace: mesh-wide
    assert "selector" not in doc["spec"]
    (metrics,) = doc["spec"]["metrics"]
    assert metrics["overrides"] == [
        {"match": {"metric": "ALL_METRICS", "mode": "CLIENT_AND_SERVER"}, "disabled": True}
    ]
    assert doc["spec"]["accessLogging"][0]["disabled"] is True


def prometheus_config() -> dict[str, Any]:
    docs = load_docs(REPO / "istio-install" / "prometheus.yaml")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    parsed: dict[str, Any] = yaml.safe_load(cm["data"]["prometheus.yml"])
    return parsed


def test_prometheus_scrapes_cadvisor_through_the_api_server() -> None:
    docs = load_docs(REPO / "istio-install" / "prometheus.yaml")
    assert all(
        d["metadata"].get("namespace", "istio-prometheus") == "istio-prometheus" for d in docs
    )
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["metadata"]["labels"]["app"] == "prometheus"
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert any(
        "nodes/proxy" in r.get("resources", []) and "get" in r["verbs"] for r in role["rules"]
    )
    cfg = prometheus_config()
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "kubernetes-cadvisor"]
    assert job["kubernetes_sd_configs"] == [{"role": "node"}]
    relabel = {r["target_label"]: r for r in job["relabel_configs"]}
    assert relabel["__address__"]["replacement"] == "kubernetes.default.svc:443"
    assert relabel["__metrics_path__"]["replacement"] == "/api/v1/nodes/$1/proxy/metrics/cadvisor"
    kept = job["metric_relabel_configs"][0]["regex"].split("|")
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"} <= set(kept)


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool not installed (Debian prometheus)")
    cfg = prometheus_config()
    job = cfg["scrape_configs"][0]
    # Debian's promtool is built without Kubernetes discovery, and it checks that credential
    # files exist: swap in file discovery and local files, keep everything else as shipped.
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    del job["kubernetes_sd_configs"]
    (tmp_path / "ca.crt").write_text("")
    (tmp_path / "token").write_text("t")
    job["tls_config"]["ca_file"] = str(tmp_path / "ca.crt")
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# setup_test.sh: rendered manifests for every mesh


def render_for(
    stubs: Stubs, mesh: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = stubs.root / f"render-{mesh}"
    proc = stubs.run(
        "setup_test.sh",
        env={
            "DRY_RUN": "1",
            "MESH": mesh,
            "RENDER_DIR": str(out),
            "POD_CIDRS": "10.8.0.0/24 10.8.1.0/24",
            **env,
        },
    )
    assert proc.returncode == 0, proc.stderr
    return proc, out


def pod_template(docs: list[dict[str, Any]], app: str) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == app]
    assert dep["spec"]["selector"]["matchLabels"] == {"app": app}
    template: dict[str, Any] = dep["spec"]["template"]
    return template


@pytest.mark.parametrize("mesh", MESHES)
def test_rendered_manifests_validate(stubs: Stubs, mesh: str) -> None:
    proc, out = render_for(stubs, mesh)
    assert stubs.calls() == []  # DRY_RUN ran nothing
    files = sorted(p.name for p in out.iterdir())
    expected = ["fortio.yaml"]
    if mesh.startswith("istio"):
        expected = ["fortio.yaml", "istio-ingress.yaml", "istio-mtls.yaml"]
    assert files == expected
    kinds = []
    for name in files:
        for doc in load_docs(out / name):
            validate_doc(doc)
            assert doc["metadata"]["namespace"] == "twopods"
            kinds.append(doc["kind"])
        assert ["kubectl", "apply", "-f", str(out / name)] in plan(proc.stdout)
    assert kinds.count("Deployment") == 2 and kinds.count("Service") == 2


@pytest.mark.parametrize("mesh", MESHES)
def test_workloads_match_what_the_kubernetes_platform_looks_for(stubs: Stubs, mesh: str) -> None:
    _, out = render_for(stubs, mesh)
    docs = load_docs(out / "fortio.yaml")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert set(services) == {"fortioclient", "fortioserver"}
    assert services["fortioclient"]["spec"]["type"] == "LoadBalancer"
    assert services["fortioserver"]["spec"]["type"] == "ClusterIP"
    for app, other in (("fortioclient", "fortioserver"), ("fortioserver", "fortioclient")):
        assert services[app]["spec"]["selector"] == {"app": app}
        assert {p["port"] for p in services[app]["spec"]["ports"]} >= {8080, 8077}
        tmpl = pod_template(docs, app)
        assert tmpl["metadata"]["labels"]["app"] == app
        spec = tmpl["spec"]
        containers = {c["name"]: c for c in spec["containers"]}
        assert set(containers) == {"captured", "uncaptured", "tools"}
        # The fortio image has no pkill: the runner stops a run from the tools container,
        # which sees fortio's processes because the pod shares one PID namespace.
        tools = containers.pop("tools")
        assert spec["shareProcessNamespace"] is True
        assert tools["image"] == "busybox:1.36.1" and tools["command"][0] == "sleep"
        # ... and reads each result back from fortio's data dir (the report UI's).
        assert tools["volumeMounts"] == [
            {"name": "fortio-data", "mountPath": "/var/lib/fortio", "readOnly": True}
        ]
        ports = {n: [p["containerPort"] for p in c["ports"]] for n, c in containers.items()}
        assert 8080 in ports["captured"] and 8077 in ports["uncaptured"]
        for c in containers.values():
            assert c["args"][0] == "server"
            assert c["args"][c["args"].index("-data-dir") + 1] == "/var/lib/fortio"
            assert {"name": "fortio-data", "mountPath": "/var/lib/fortio"} in c["volumeMounts"]
        # the http ports of each fortio server are the ones the Service and probes use
        assert (
            containers["captured"]["args"][containers["captured"]["args"].index("-http-port") + 1]
            == "8080"
        )
        assert (
            containers["uncaptured"]["args"][
                containers["uncaptured"]["args"].index("-http-port") + 1
            ]
            == "8077"
        )
        (term,) = spec["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["labelSelector"] == {"matchLabels": {"app": other}}
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert tmpl["metadata"]["annotations"]["meshperf/mesh"] == mesh
        if mesh in ("istio-ambient", "none"):  # no per-pod proxy settings at all
            assert tmpl["metadata"]["annotations"] == {"meshperf/mesh": mesh}


def test_istio_annotations(stubs: Stubs) -> None:
    _, out = render_for(
        stubs,
        "istio",
        PROXY_CPU="2",
        PROXY_MEMORY="1Gi",
        PROXY_CPU_LIMIT="3",
        PROXY_CONCURRENCY="4",
    )
    docs = load_docs(out / "fortio.yaml")
    for app in ("fortioclient", "fortioserver"):
        ann = pod_template(docs, app)["metadata"]["annotations"]
        assert ann["traffic.sidecar.istio.io/excludeInboundPorts"].split(",") == [
            "8075", "8076", "8077",
        ]  # fmt: skip
        assert ann["sidecar.istio.io/proxyCPU"] == "2"
        assert ann["sidecar.istio.io/proxyMemory"] == "1Gi"
        assert ann["sidecar.istio.io/proxyCPULimit"] == "3"
        assert "sidecar.istio.io/proxyMemoryLimit" not in ann
        assert json.loads(ann["proxy.istio.io/config"]) == {"concurrency": 4}
        assert not any(k.startswith(("linkerd.io", "config.linkerd.io")) for k in ann)
    client = pod_template(docs, "fortioclient")["metadata"]["annotations"]
    assert client["traffic.sidecar.istio.io/excludeOutboundIPRanges"] == "10.8.0.0/24,10.8.1.0/24"
    assert "8077" in client["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")
    server = pod_template(docs, "fortioserver")["metadata"]["annotations"]
    assert "traffic.sidecar.istio.io/excludeOutboundIPRanges" not in server


def test_linkerd_annotations(stubs: Stubs) -> None:
    _, out = render_for(stubs, "linkerd", PROXY_CPU="500m", PROXY_MEMORY_LIMIT="256Mi")
    docs = load_docs(out / "fortio.yaml")
    for app in ("fortioclient", "fortioserver"):
        ann = pod_template(docs, app)["metadata"]["annotations"]
        assert "8077" in ann["config.linkerd.io/skip-inbound-ports"].split(",")
        assert "8077" in ann["config.linkerd.io/skip-outbound-ports"].split(",")
        # linkerd-proxy's workers come from its CPU request: PROXY_CONCURRENCY (2) cores
        assert ann["config.linkerd.io/proxy-cpu-request"] == "2"
        assert ann["config.linkerd.io/proxy-memory-limit"] == "256Mi"
        assert not any(k.startswith(("sidecar.istio.io/proxy", "traffic.sidecar")) for k in ann)


def test_ingress_and_mtls_resources(stubs: Stubs) -> None:
    _, out = render_for(stubs, "istio", DNS_DOMAIN="perf.example.org", MTLS_MODE="STRICT")
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_docs(out / "istio-ingress.yaml")}
    gw = docs[("Gateway", "fortio-gateway")]
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    vs = docs[("VirtualService", "fortioserver")]
    assert "fortioserver.perf.example.org" in vs["spec"]["hosts"]
    assert vs["spec"]["gateways"] == ["fortio-gateway"]
    dest = vs["spec"]["http"][0]["route"][0]["destination"]
    assert dest == {"host": "fortioserver.twopods.svc.cluster.local", "port": {"number": 8080}}
    assert docs[("VirtualService", "fortioclient")]["spec"]["hosts"] == [
        "fortioclient.perf.example.org"
    ]
    (pa,) = load_docs(out / "istio-mtls.yaml")
    assert pa["spec"]["mtls"]["mode"] == "STRICT"
    _, out2 = render_for(stubs, "istio-ambient", INGRESS="0", NAMESPACE="perf2")
    assert not (out2 / "istio-ingress.yaml").exists()
    (pa2,) = load_docs(out2 / "istio-mtls.yaml")
    assert pa2["spec"]["mtls"]["mode"] == "PERMISSIVE"
    assert pa2["metadata"]["namespace"] == "perf2"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MESH": "consul"}, "MESH must be"),
        ({"NAMESPACE": "Two_Pods"}, "NAMESPACE="),
        ({"MESH": "linkerd", "MTLS_MODE": "STRICT"}, "MTLS_MODE applies to Istio only"),
        ({"MTLS_MODE": "strict"}, "MTLS_MODE must be"),
        ({"MESH": "istio", "WAYPOINT": "1"}, "WAYPOINT=1 needs MESH=istio-ambient"),
        ({"DRY_RUN": "yes"}, "DRY_RUN must be 0 or 1"),
        ({"WAIT_TIMEOUT": "5 minutes"}, "WAIT_TIMEOUT="),
    ],
)
def test_setup_test_rejects_bad_settings(stubs: Stubs, env: dict[str, str], needle: str) -> None:
    proc = stubs.run("setup_test.sh", env=env)
    assert needle in one_line_error(proc, "setup_test.sh", 2)
    assert stubs.calls() == []


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DNS_DOMAIN": "evil\nkind: Secret"}, "DNS_DOMAIN="),
        ({"PROXY_CPU": "1 core"}, "PROXY_CPU="),
        ({"FORTIO_IMAGE": "fortio/fortio:1.0\n  x: y"}, "FORTIO_IMAGE="),
        ({"TOOLS_IMAGE": "busybox; rm -rf /"}, "TOOLS_IMAGE="),
        ({"POD_CIDRS": "10.0.0.0/33"}, "POD_CIDRS="),
    ],
)
def test_values_cannot_inject_yaml(stubs: Stubs, env: dict[str, str], needle: str) -> None:
    proc = stubs.run(
        "setup_test.sh", env={"DRY_RUN": "1", "MESH": "istio", "POD_CIDRS": "10.0.0.0/16", **env}
    )
    assert proc.returncode == 1
    assert needle in proc.stderr
    assert "setup_test.sh: error: could not render the manifests" in proc.stderr
    assert "+ kubectl" not in proc.stdout  # rendering comes before any change to the cluster


# --------------------------------------------------------------------------------------------
# setup_test.sh against stub kubectl: the command sequence per mesh


def deploy_rules(stubs: Stubs, proxy: str | None, external: str = "") -> None:
    stubs.rule("kubectl", ["get", "nodes"], stdout="10.4.0.0/24 10.4.1.0/24")
    names = "captured uncaptured" + (f" {proxy}" if proxy else "")
    # a pod of the previous rollout, still terminating and without the proxy, comes first
    stubs.rule(
        "kubectl",
        ["get", "pod"],
        stdout=f"2026-01-01T00:00:00Z|captured uncaptured \n|{names} \n",
    )
    stubs.rule("kubectl", ["get", "svc", "fortioclient"], stdout=external)
    stubs.rule("kubectl", ["create", "namespace"], stdout="kind: Namespace\n")


def kubectl_apply_files(stubs: Stubs) -> list[str]:
    return [
        Path(a[a.index("-f") + 1]).name
        for a in stubs.argvs("kubectl")
        if a[:1] == ["apply"] and a[a.index("-f") + 1] != "-"
    ]


@pytest.mark.parametrize(
    ("mesh", "label", "annotate", "proxy"),
    [
        (
            "istio",
            ["istio-injection=enabled", "istio.io/dataplane-mode-"],
            ["linkerd.io/inject-"],
            "istio-proxy",
        ),
        (
            "istio-ambient",
            ["istio.io/dataplane-mode=ambient", "istio-injection-"],
            ["linkerd.io/inject-"],
            None,
        ),
        (
            "linkerd",
            ["istio-injection-", "istio.io/dataplane-mode-"],
            ["linkerd.io/inject=enabled"],
            "linkerd-proxy",
        ),
        ("none", ["istio-injection-", "istio.io/dataplane-mode-"], ["linkerd.io/inject-"], None),
    ],
)
def test_setup_test_command_sequence(
    stubs: Stubs, mesh: str, label: list[str], annotate: list[str], proxy: str | None
) -> None:
    deploy_rules(stubs, proxy, external="34.1.2.3")
    proc = stubs.run("setup_test.sh", env={"MESH": mesh, "RENDER_DIR": str(stubs.root / "r")})
    assert proc.returncode == 0, proc.stderr
    kubectl = stubs.argvs("kubectl")
    # only reads before the namespace is created idempotently, then labelled/annotated for
    # exactly this mesh
    first = kubectl.index(["create", "namespace", "twopods", "--dry-run=client", "-o", "yaml"])
    assert all(a[0] == "get" for a in kubectl[:first])
    assert kubectl[first + 1] == ["apply", "-f", "-"]
    assert stubs.calls("kubectl")[first + 1]["stdin"] == "kind: Namespace\n"
    (lab,) = [a for a in kubectl if a[:3] == ["label", "namespace", "twopods"]][:1]
    assert set(label) <= set(lab)
    (ann,) = [a for a in kubectl if a[:3] == ["annotate", "namespace", "twopods"]]
    assert set(annotate) <= set(ann)
    expected_files = ["fortio.yaml"]
    if mesh.startswith("istio"):
        expected_files += ["istio-mtls.yaml", "istio-ingress.yaml"]
    assert kubectl_apply_files(stubs) == expected_files
    # the pod CIDRs were read from the nodes only where the client sidecar needs them
    assert (["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"] in kubectl) == (
        mesh == "istio"
    )
    if mesh == "istio":
        assert "10.4.0.0/24,10.4.1.0/24" in (stubs.root / "r" / "fortio.yaml").read_text()
    # waits for both deployments and for ready pods, after applying them
    applied_at = max(i for i, a in enumerate(kubectl) if a[:1] == ["apply"])
    waits = [i for i, a in enumerate(kubectl) if "rollout" in a]
    assert len(waits) == 2 and min(waits) > applied_at
    assert [
        "-n",
        "twopods",
        "rollout",
        "status",
        "deployment/fortioserver",
        "--timeout=300s",
    ] in kubectl
    assert [
        "-n",
        "twopods",
        "rollout",
        "status",
        "deployment/fortioclient",
        "--timeout=300s",
    ] in kubectl
    # the proxy check reads the pods after they are rolled out
    gets = [i for i, a in enumerate(kubectl) if a[2:4] == ["get", "pod"]]
    assert len(gets) == (2 if proxy else 0) and all(i > max(waits) for i in gets)
    assert "export FORTIO_CLIENT_URL=http://34.1.2.3:8080" in proc.stdout
    assert stubs.calls("istioctl") == [] and stubs.calls("linkerd") == []


def test_setup_test_ambient_waypoint(stubs: Stubs) -> None:
    deploy_rules(stubs, None)
    proc = stubs.run("setup_test.sh", env={"MESH": "istio-ambient", "WAYPOINT": "1"})
    assert proc.returncode == 0, proc.stderr
    assert stubs.argvs("istioctl") == [
        ["waypoint", "apply", "-n", "twopods", "--enroll-namespace", "--wait"]
    ]
    # without an external address the port-forward is printed
    assert "kubectl -n twopods port-forward svc/fortioclient 8080:8080" in proc.stdout
    assert "export FORTIO_CLIENT_URL=http://localhost:8080" in proc.stdout


def test_setup_test_strict_mtls_uses_port_forward(stubs: Stubs) -> None:
    deploy_rules(stubs, "istio-proxy", external="34.1.2.3")
    proc = stubs.run("setup_test.sh", env={"MESH": "istio", "MTLS_MODE": "STRICT"})
    assert proc.returncode == 0, proc.stderr
    assert "http://34.1.2.3" not in proc.stdout
    assert "export FORTIO_CLIENT_URL=http://localhost:8080" in proc.stdout


@pytest.mark.parametrize(
    ("mesh", "proxy"), [("istio", "istio-proxy"), ("linkerd", "linkerd-proxy")]
)
def test_setup_test_fails_when_pods_have_no_proxy(stubs: Stubs, mesh: str, proxy: str) -> None:
    deploy_rules(stubs, None)
    proc = stubs.run("setup_test.sh", env={"MESH": mesh})
    line = one_line_error(proc, "setup_test.sh", 1)
    assert f"has no {proxy} container" in line


def test_setup_test_stops_when_kubectl_fails(stubs: Stubs) -> None:
    stubs.rule("kubectl", ["rollout", "status"], rc=1, stderr="error: timed out waiting\n")
    deploy_rules(stubs, "istio-proxy")
    proc = stubs.run("setup_test.sh", env={"MESH": "istio"})
    assert proc.returncode == 1
    assert not any("wait" in a for a in stubs.argvs("kubectl"))


# --------------------------------------------------------------------------------------------
# Time limits: a hung API server or CLI ends the script with one line instead of hanging it

HANG = 30.0  # seconds a hung stub sleeps: far beyond every limit the tests below set


@pytest.mark.parametrize(
    ("script", "args", "env", "cmd", "hang_on", "limit", "knob", "never"),
    [
        # query inside $(...): the pod CIDRs
        (
            "setup_test.sh",
            [],
            {"MESH": "istio", "KUBECTL_TIMEOUT": "1s"},
            "kubectl",
            ["get", "nodes"],
            "2s",
            "KUBECTL_TIMEOUT",
            ["apply"],
        ),
        # the right-hand side of a pipe
        (
            "setup_test.sh",
            [],
            {"MESH": "none", "KUBECTL_TIMEOUT": "1"},
            "kubectl",
            ["apply", "-f", "-"],
            "2s",
            "KUBECTL_TIMEOUT",
            ["label"],
        ),
        # a query whose stderr the script silences still reports the time-out
        (
            "istio-install/setup_istio.sh",
            ["1.25.0"],
            {"PROFILE": "ambient", "SKIP_PROMETHEUS": "1", "KUBECTL_TIMEOUT": "1s"},
            "kubectl",
            ["get", "crd"],
            "2s",
            "KUBECTL_TIMEOUT",
            ["rollout"],
        ),
        # rollout status: its own --timeout plus KUBECTL_TIMEOUT
        (
            "istio-install/setup_prometheus.sh",
            [],
            {"WAIT_TIMEOUT": "1s", "KUBECTL_TIMEOUT": "1s"},
            "kubectl",
            ["rollout", "status"],
            "2s",
            "KUBECTL_TIMEOUT",
            [],
        ),
        # istioctl install has no request timeout of its own: coreutils timeout at CLI_TIMEOUT
        (
            "istio-install/setup_istio.sh",
            ["1.25.0"],
            {"SKIP_PROMETHEUS": "1", "CLI_TIMEOUT": "1s"},
            "istioctl",
            ["install"],
            "1s",
            "CLI_TIMEOUT",
            ["rollout"],
        ),
        # the left-hand side of a pipe: nothing is applied
        (
            "linkerd/setup_linkerd.sh",
            [],
            {"SKIP_PROMETHEUS": "1", "CLI_TIMEOUT": "1s"},
            "linkerd",
            ["install", "--crds"],
            "1s",
            "CLI_TIMEOUT",
            ["apply", "-f", "-"],
        ),
    ],
    ids=[
        "query",
        "pipe",
        "silenced-query",
        "rollout-status",
        "istioctl-install",
        "linkerd-install",
    ],
)
def test_a_hung_call_times_out_with_one_line(
    stubs: Stubs,
    script: str,
    args: list[str],
    env: dict[str, str],
    cmd: str,
    hang_on: list[str],
    limit: str,
    knob: str,
    never: list[str],
) -> None:
    stubs.rule(cmd, hang_on, sleep=HANG)
    env = {**env, "ISTIOCTL": str(stubs.bin / "istioctl"), "LINKERD": str(stubs.bin / "linkerd")}
    proc = stubs.run(script, *args, env=env)
    line = one_line_error(proc, Path(script).name, 1)
    assert f" timed out after {limit} " in line and knob in line, line
    named = shlex.split(line.split(": error: ", 1)[1].split(" timed out")[0])
    assert named[0].endswith(cmd) and all(a in named for a in hang_on), named
    # the hung call was killed, not waited for
    assert not Path(f"{stubs.log}.woke").exists()
    hung = [c for c in stubs.calls(cmd) if all(a in c["argv"] for a in hang_on)]
    assert len(hung) == 1
    # nothing after it ran
    assert stubs.calls()[-1]["argv"] == hung[0]["argv"]
    if never:
        assert not any(a[: len(never)] == never for a in stubs.argvs("kubectl"))


class HungApiServer:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers: the wire of an
    API server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.held.append(conn)

    def __enter__(self) -> HungApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@skip_unless(
    shutil.which("kubectl") is not None, "needs a real kubectl (Debian kubernetes-client)"
)
def test_real_kubectl_against_a_hung_api_server(stubs: Stubs, tmp_path: Path) -> None:
    """The printed command is real kubectl syntax (--request-timeout before the verb), and a
    real kubectl whose API server never answers ends the script with one line."""
    stubs.remove("kubectl")
    (stubs.bin / "kubectl").symlink_to(shutil.which("kubectl") or "")
    with HungApiServer() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "hung", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}
                    ],
                    "users": [{"name": "u", "user": {}}],
                    "contexts": [{"name": "hung", "context": {"cluster": "hung", "user": "u"}}],
                    "current-context": "hung",
                }
            )
        )
        kubeconfig.chmod(0o600)
        proc = stubs.run(
            "setup_test.sh",
            env={"MESH": "istio", "KUBECTL_TIMEOUT": "1s", "KUBECONFIG": str(kubeconfig)},
        )
        assert server.held  # kubectl did reach the hung server
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.splitlines()[-1]
    # kubectl may first log its own request time-outs; the script's verdict is the last line
    assert last.startswith("setup_test.sh: error: kubectl --request-timeout=1s get nodes"), last
    assert "KUBECTL_TIMEOUT" in last
    assert "unknown flag" not in proc.stderr


def test_a_failed_manifest_is_not_applied(stubs: Stubs) -> None:
    """`linkerd install | kubectl apply -f -`: half a manifest from a failed install never
    reaches the cluster."""
    stubs.rule("linkerd", ["install"], stdout="kind: Namespace\n", rc=1, stderr="boom\n")
    proc = stubs.run(
        "linkerd/setup_linkerd.sh",
        env={"SKIP_PROMETHEUS": "1", "LINKERD": str(stubs.bin / "linkerd")},
    )
    assert proc.returncode == 1, proc.stderr
    assert ["install", "--crds"] in stubs.argvs("linkerd")
    assert ["apply", "-f", "-"] not in stubs.argvs("kubectl")


def test_the_time_limits_are_passed_on(stubs: Stubs) -> None:
    """The stub kubectl sees the request timeout it was given, and a call that does not hang
    is not cut short by the limit around it."""
    stubs.rule("kubectl", ["get", "nodes"], sleep=0.2, stdout="10.4.0.0/24")
    proc = stubs.run(
        "setup_test.sh", env={"MESH": "none", "KUBECTL_TIMEOUT": "2m", "EXPOSE_CLIENT": "0"}
    )
    assert proc.returncode == 0, proc.stderr
    stubs.kubectl_timeout = "2m"
    assert stubs.argvs("kubectl")  # every one checked for --request-timeout=2m by calls()
    proc = stubs.run(
        "setup_test.sh",
        env={"MESH": "istio", "KUBECTL_TIMEOUT": "2m", "CLI_TIMEOUT": "1h", "DRY_RUN": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    cmds = plan(proc.stdout, kubectl_timeout="2m", cli_timeout="1h")
    assert ["kubectl", "apply", "-f", "-"] in cmds
    assert "timeout --foreground -k 10s 240s kubectl --request-timeout=2m apply -f -" in proc.stdout


@pytest.mark.parametrize(
    "env",
    [
        {"KUBECTL_TIMEOUT": "0"},
        {"KUBECTL_TIMEOUT": "0s"},
        {"KUBECTL_TIMEOUT": "1.5s"},
        {"KUBECTL_TIMEOUT": "60s; rm -rf /"},
        {"CLI_TIMEOUT": "forever"},
    ],
)
def test_bad_time_limits_are_usage_errors(stubs: Stubs, env: dict[str, str]) -> None:
    proc = stubs.run("setup_test.sh", env={"MESH": "none", **env})
    line = one_line_error(proc, "setup_test.sh", 2)
    assert next(iter(env)) in line
    assert stubs.calls() == []


# --------------------------------------------------------------------------------------------
# Missing prerequisites


@pytest.mark.parametrize(
    ("script", "args", "env"),
    [
        ("setup_test.sh", [], {}),
        ("istio-install/setup_istio.sh", ["1.24.2"], {}),
        ("istio-install/telemetry.sh", ["off"], {}),
        ("istio-install/setup_prometheus.sh", [], {}),
        ("linkerd/setup_linkerd.sh", [], {}),
        ("istio-install/create_cluster.sh", ["perf1"], {"CLUSTER_TYPE": "kind"}),
    ],
)
def test_missing_kubectl_is_a_one_line_error(
    stubs: Stubs, script: str, args: list[str], env: dict[str, str]
) -> None:
    stubs.remove("kubectl")
    proc = stubs.run(script, *args, env=env)
    line = one_line_error(proc, Path(script).name, 1)
    assert "kubectl not found" in line
    assert stubs.calls() == []


def test_missing_gcloud_is_a_one_line_error(stubs: Stubs) -> None:
    stubs.remove("gcloud")
    proc = stubs.run("istio-install/create_cluster.sh", "perf1", env={"PROJECT_ID": "my-project"})
    assert "gcloud not found" in one_line_error(proc, "create_cluster.sh", 1)


def test_missing_curl_is_a_one_line_error(stubs: Stubs) -> None:
    stubs.remove("curl")
    proc = stubs.run("istio-install/setup_istio.sh", "1.24.2")
    assert "curl not found" in one_line_error(proc, "setup_istio.sh", 1)
    assert stubs.calls() == []


# --------------------------------------------------------------------------------------------
# setup_istio.sh


def fake_release(
    stubs: Stubs, url: str, member: str, content: bytes, *, tarball: bool, digest: str | None = None
) -> None:
    """Serve ``url`` (and ``url.sha256``) from the stub curl: a tar.gz holding ``member`` or
    the file itself, and its sha256 in the release's "<hex>  <name>" format."""
    data = content
    if tarball:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.size = len(content)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(content))
        data = buf.getvalue()
    name = url.rsplit("/", 1)[1]
    asset = stubs.root / "srv" / name
    asset.parent.mkdir(exist_ok=True)
    asset.write_bytes(data)
    sha = stubs.root / "srv" / (name + ".sha256")
    sha.write_text(f"{digest or hashlib.sha256(data).hexdigest()}  {name}\n")
    # .sha256 first: its URL contains the asset's URL
    stubs.rule("curl", [url + ".sha256"], copy_to_o=str(sha))
    stubs.rule("curl", [url], copy_to_o=str(asset))
    # GitHub's release metadata lists the same digest (what setup_linkerd.sh checks)
    repo, tag = url.split("github.com/", 1)[1].split("/releases/download/", 1)
    meta = stubs.root / "srv" / (name + ".release.json")
    hexdigest = digest or hashlib.sha256(data).hexdigest()
    meta.write_text(json.dumps({"assets": [{"name": name, "digest": f"sha256:{hexdigest}"}]}))
    api = f"https://api.github.com/repos/{repo}/releases/tags/{tag.split('/', 1)[0]}"
    stubs.rule("curl", [api], copy_to_o=str(meta))


def stub_script(stubs: Stubs, name: str) -> bytes:
    """A downloadable CLI that is itself a stub logging under ``name``."""
    return (
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(STUB))} {name} "$@"\n'
    ).encode()


ISTIO_URL = (
    f"https://github.com/istio/istio/releases/download/1.24.2/istioctl-1.24.2-linux-{ARCH}.tar.gz"
)


@pytest.mark.skipif(platform.system() != "Linux", reason="release asset names are per OS")
@pytest.mark.parametrize("profile", ["default", "ambient"])
def test_setup_istio_downloads_verifies_and_installs(stubs: Stubs, profile: str) -> None:
    stubs.remove("istioctl")  # only the downloaded one may run
    fake_release(stubs, ISTIO_URL, "istioctl", stub_script(stubs, "istioctl-1.24.2"), tarball=True)
    stubs.rule("kubectl", ["get", "crd"], rc=1)  # no Gateway API CRDs yet
    stubs.rule("kubectl", ["get", "daemonset", "-A"], stdout="istio-system")
    cache = stubs.root / "cache"
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.24.2",
        "--set",
        "values.x=1",
        env={"PROFILE": profile, "ISTIO_CACHE": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr
    curl = stubs.argvs("curl")
    assert [a[-1] for a in curl] == [ISTIO_URL, ISTIO_URL + ".sha256"]
    binary = cache / "1.24.2" / "istioctl"
    assert os.access(binary, os.X_OK)
    istioctl = stubs.argvs("istioctl-1.24.2")
    overlay = "perf-overlay-ambient.yaml" if profile == "ambient" else "perf-overlay.yaml"
    assert istioctl[0] == [
        "install",
        "--skip-confirmation",
        "--set",
        f"profile={profile}",
        "-f",
        str(REPO / "istio-install" / overlay),
        "--set",
        "values.x=1",
    ]
    assert istioctl[-1] == ["version"]
    kubectl = stubs.argvs("kubectl")
    rollouts = [a[4] for a in kubectl if a[2:4] == ["rollout", "status"] and a[1] == "istio-system"]
    if profile == "ambient":
        assert rollouts == [
            "deployment/istiod",
            "deployment/istio-ingressgateway",
            "daemonset/istio-cni-node",
            "daemonset/ztunnel",
        ]
        assert any("standard-install.yaml" in a[-1] for a in kubectl if a[0] == "apply")
    else:
        assert rollouts == ["deployment/istiod", "deployment/istio-ingressgateway"]
        assert not any("gateway-api" in " ".join(a) for a in kubectl)
    # then Prometheus, and the port-forward for PROMETHEUS_URL
    assert ["apply", "-f", str(REPO / "istio-install" / "prometheus.yaml")] in kubectl
    assert "export PROMETHEUS_URL=http://localhost:9090" in proc.stdout
    assert "port-forward svc/prometheus 9090:9090" in proc.stdout

    # a second run uses the cached binary: no download
    stubs.log.write_text("")
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.24.2",
        env={"PROFILE": profile, "ISTIO_CACHE": str(cache), "SKIP_PROMETHEUS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert stubs.calls("curl") == []
    assert stubs.argvs("istioctl-1.24.2")[0][:4] == [
        "install",
        "--skip-confirmation",
        "--set",
        f"profile={profile}",
    ]
    assert ["apply", "-f", str(REPO / "istio-install" / "prometheus.yaml")] not in stubs.argvs(
        "kubectl"
    )


@pytest.mark.skipif(platform.system() != "Linux", reason="release asset names are per OS")
def test_setup_istio_refuses_a_bad_checksum(stubs: Stubs) -> None:
    stubs.remove("istioctl")
    fake_release(
        stubs,
        ISTIO_URL,
        "istioctl",
        stub_script(stubs, "istioctl-1.24.2"),
        tarball=True,
        digest="0" * 64,
    )
    cache = stubs.root / "cache"
    proc = stubs.run("istio-install/setup_istio.sh", "1.24.2", env={"ISTIO_CACHE": str(cache)})
    line = one_line_error(proc, "setup_istio.sh", 1)
    assert "checksum mismatch" in line and "0" * 64 in line
    assert stubs.calls("istioctl-1.24.2") == []
    assert not (cache / "1.24.2" / "istioctl").exists()
    assert stubs.calls("kubectl") == []


def test_setup_istio_with_given_istioctl_and_platform(stubs: Stubs) -> None:
    stubs.rule("kubectl", ["get", "daemonset", "-A"], stdout="kube-system")
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.25.0",
        env={
            "ISTIOCTL": str(stubs.bin / "istioctl"),
            "ISTIO_PLATFORM": "gke",
            "PROFILE": "ambient",
            "SKIP_PROMETHEUS": "1",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert stubs.calls("curl") == []
    install = stubs.argvs("istioctl")[0]
    assert install[install.index("--set", 3) + 1] == "values.global.platform=gke"
    # GKE admits ztunnel and istio-cni in istio-system only with this quota, applied first
    quota = ["apply", "-f", str(REPO / "istio-install" / "gke-ambient-quota.yaml")]
    assert stubs.argvs("kubectl")[:3] == [
        ["create", "namespace", "istio-system", "--dry-run=client", "-o", "yaml"],
        ["apply", "-f", "-"],
        quota,
    ]
    stubs.log.write_text("")
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.25.0",
        env={"ISTIOCTL": str(stubs.bin / "istioctl"), "PROFILE": "ambient", "SKIP_PROMETHEUS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert quota not in stubs.argvs("kubectl")


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["release-1.2-latest"], {}, "RELEASE='release-1.2-latest'"),
        (["1.20.3"], {}, "too old"),
        (["1.23.0"], {"PROFILE": "ambient"}, "too old for PROFILE=ambient"),
        (["1.24.2"], {"PROFILE": "sidecars"}, "PROFILE must be default or ambient"),
        (["1.24.2"], {"SKIP_PROMETHEUS": "yes"}, "SKIP_PROMETHEUS must be 0 or 1"),
    ],
)
def test_setup_istio_usage_errors(
    stubs: Stubs, args: list[str], env: dict[str, str], needle: str
) -> None:
    proc = stubs.run("istio-install/setup_istio.sh", *args, env=env)
    assert needle in one_line_error(proc, "setup_istio.sh", 2)
    assert stubs.calls() == []


def test_setup_istio_dry_run_prints_the_plan(stubs: Stubs) -> None:
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.24.2",
        env={"DRY_RUN": "1", "PROFILE": "ambient", "ISTIO_CACHE": str(stubs.root / "c")},
    )
    assert proc.returncode == 0, proc.stderr
    assert stubs.calls() == []
    cmds = plan(proc.stdout)
    assert cmds[0][0] == "curl" and cmds[0][-1].endswith(f"istioctl-1.24.2-linux-{ARCH}.tar.gz")
    install = [c for c in cmds if c[1:2] == ["install"]]
    assert install and install[0][0].endswith("/1.24.2/istioctl")
    assert "profile=ambient" in install[0]
    assert [
        "kubectl",
        "-n",
        "istio-system",
        "rollout",
        "status",
        "daemonset/ztunnel",
        "--timeout=300s",
    ] in cmds
    assert not (stubs.root / "c").exists()


# --------------------------------------------------------------------------------------------
# telemetry.sh, create_cluster.sh, setup_linkerd.sh


def test_telemetry_off_and_on(stubs: Stubs) -> None:
    off = stubs.run("istio-install/telemetry.sh", "off")
    assert off.returncode == 0, off.stderr
    assert "--labels=notelemetry" in off.stdout
    on = stubs.run("istio-install/telemetry.sh", "on")
    assert on.returncode == 0, on.stderr
    manifest = str(REPO / "istio-install" / "telemetry-off.yaml")
    assert stubs.argvs("kubectl") == [
        ["apply", "-f", manifest],
        ["delete", "--ignore-not-found", "-f", manifest],
    ]
    for bad in ([], ["of"], ["off", "now"]):
        proc = stubs.run("istio-install/telemetry.sh", *bad)
        assert "usage: telemetry.sh off|on" in one_line_error(proc, "telemetry.sh", 2)


def test_create_kind_cluster(stubs: Stubs) -> None:
    out = stubs.root / "kind"
    proc = stubs.run(
        "istio-install/create_cluster.sh",
        "perf1",
        env={"CLUSTER_TYPE": "kind", "WORKERS": "3", "RENDER_DIR": str(out)},
    )
    assert proc.returncode == 0, proc.stderr
    config = out / "kind-config.yaml"
    assert stubs.argvs("kind") == [
        ["create", "cluster", "--name", "perf1", "--config", str(config), "--wait", "5m"]
    ]
    cfg = yaml.safe_load(config.read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    assert stubs.argvs("kubectl") == [["cluster-info", "--context", "kind-perf1"]]
    proc = stubs.run(
        "istio-install/create_cluster.sh", "perf1", env={"CLUSTER_TYPE": "kind", "WORKERS": "1"}
    )
    assert "at least 2 workers" in one_line_error(proc, "create_cluster.sh", 2)


def test_create_gke_cluster(stubs: Stubs) -> None:
    stubs.rule("gcloud", ["config", "get-value"], stdout="me@example.com\n")
    proc = stubs.run(
        "istio-install/create_cluster.sh",
        "perf1",
        env={"PROJECT_ID": "my-project", "MIN_NODES": "3", "MAX_NODES": "6"},
    )
    assert proc.returncode == 0, proc.stderr
    create, creds, account = stubs.argvs("gcloud")
    assert create[:4] == ["container", "clusters", "create", "perf1"]
    flags = dict(zip(create[4::1], create[5::1], strict=False))
    assert flags["--project"] == "my-project" and flags["--zone"] == "us-central1-a"
    assert flags["--machine-type"] == "n1-standard-32" and flags["--num-nodes"] == "4"
    assert "--enable-autoscaling" in create
    assert flags["--min-nodes"] == "3" and flags["--max-nodes"] == "6"
    assert creds == [
        "container",
        "clusters",
        "get-credentials",
        "perf1",
        "--project",
        "my-project",
        "--zone",
        "us-central1-a",
    ]
    assert account == ["config", "get-value", "core/account"]
    binding, apply = stubs.argvs("kubectl")
    assert "--user=me@example.com" in binding and apply == ["apply", "-f", "-"]


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        ([], {}, "missing cluster NAME"),
        (["Perf_1"], {}, "NAME='Perf_1'"),
        (["perf1"], {}, "PROJECT_ID is required"),
        (["perf1"], {"PROJECT_ID": "my-project", "NUM_NODES": "1"}, "at least 2 nodes"),
        (["perf1"], {"CLUSTER_TYPE": "eks"}, "CLUSTER_TYPE must be gke or kind"),
    ],
)
def test_create_cluster_usage_errors(
    stubs: Stubs, args: list[str], env: dict[str, str], needle: str
) -> None:
    proc = stubs.run("istio-install/create_cluster.sh", *args, env=env)
    assert needle in one_line_error(proc, "create_cluster.sh", 2)
    assert stubs.calls() == []


LINKERD_URL = (
    f"https://github.com/linkerd/linkerd2/releases/download/edge-26.8.3/"
    f"linkerd2-cli-edge-26.8.3-linux-{ARCH}"
)
LINKERD_API = "https://api.github.com/repos/linkerd/linkerd2/releases/tags/edge-26.8.3"


@pytest.mark.skipif(platform.system() != "Linux", reason="release asset names are per OS")
@pytest.mark.parametrize("viz", ["0", "1"])
def test_setup_linkerd(stubs: Stubs, viz: str) -> None:
    stubs.remove("linkerd")
    fake_release(stubs, LINKERD_URL, "", stub_script(stubs, "linkerd-cli"), tarball=False)
    stubs.rule("linkerd-cli", ["install", "--crds"], stdout="CRDS\n")
    stubs.rule("linkerd-cli", ["viz", "install"], stdout="VIZ\n")
    stubs.rule("linkerd-cli", ["install"], stdout="CONTROL-PLANE\n")
    proc = stubs.run(
        "linkerd/setup_linkerd.sh", env={"VIZ": viz, "LINKERD_CACHE": str(stubs.root / "lc")}
    )
    assert proc.returncode == 0, proc.stderr
    assert [a[-1] for a in stubs.argvs("curl")] == [LINKERD_API, LINKERD_URL]
    cli = stubs.argvs("linkerd-cli")
    expected = [
        ["version", "--client"],
        ["check", "--pre"],
        ["install", "--crds"],
        ["install"],
        ["check", "--wait=5m"],
    ]
    if viz == "1":
        expected += [["viz", "install"], ["viz", "check", "--wait=5m"]]
    assert cli == expected
    applied = [c["stdin"] for c in stubs.calls("kubectl") if c["argv"] == ["apply", "-f", "-"]]
    assert applied == ["CRDS\n", "CONTROL-PLANE\n"] + (["VIZ\n"] if viz == "1" else [])
    assert ["apply", "-f", str(REPO / "istio-install" / "prometheus.yaml")] in stubs.argvs(
        "kubectl"
    )


@pytest.mark.skipif(platform.system() != "Linux", reason="release asset names are per OS")
def test_setup_linkerd_refuses_a_bad_checksum(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    fake_release(
        stubs, LINKERD_URL, "", stub_script(stubs, "linkerd-cli"), tarball=False, digest="f" * 64
    )
    proc = stubs.run(
        "linkerd/setup_linkerd.sh", "edge-26.8.3", env={"LINKERD_CACHE": str(stubs.root / "lc")}
    )
    assert "checksum mismatch" in one_line_error(proc, "setup_linkerd.sh", 1)
    assert stubs.calls("linkerd-cli") == [] and stubs.calls("kubectl") == []
    assert not (stubs.root / "lc" / "edge-26.8.3" / "linkerd").exists()


def test_setup_linkerd_usage_errors(stubs: Stubs) -> None:
    proc = stubs.run("linkerd/setup_linkerd.sh", "2.18")
    assert "VERSION='2.18'" in one_line_error(proc, "setup_linkerd.sh", 2)
    proc = stubs.run("linkerd/setup_linkerd.sh", "edge-25.4.4", "extra")
    assert "too many arguments" in one_line_error(proc, "setup_linkerd.sh", 2)
    assert stubs.calls() == []


# --------------------------------------------------------------------------------------------
# Prometheus for real: the shipped scrape config, pointed at a fake API server on 127.0.0.1


_POD = 'namespace="twopods",pod="fortioserver-6f7d"'
CADVISOR_TEXT = "\n".join(
    [
        "# TYPE container_cpu_usage_seconds_total counter",
        f'container_cpu_usage_seconds_total{{container="istio-proxy",cpu="total",{_POD}}} 12.5',
        f'container_cpu_usage_seconds_total{{container="captured",cpu="total",{_POD}}} 3.25',
        "# TYPE container_memory_working_set_bytes gauge",
        f'container_memory_working_set_bytes{{container="istio-proxy",{_POD}}} 52428800',
        "# TYPE container_fs_reads_total counter",
        f'container_fs_reads_total{{container="istio-proxy",{_POD}}} 7',
        "",
    ]
)


_free_port = free_port


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_cadvisor_via_the_api_server_proxy(tmp_path: Path) -> None:
    """The shipped scrape job, run by a real Prometheus: the relabelled URL reaches the API
    server's node proxy with the service-account token over TLS, and only the kept series land."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        missing("prometheus not installed (Debian prometheus)")
    cert, key, ca = server_tls_files(tmp_path)
    token = "sa-token-123"
    (tmp_path / "token").write_text(token)
    seen: list[tuple[str, str]] = []

    class FakeAPIServer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization", "")))
            ok = self.headers.get("Authorization") == f"Bearer {token}"
            if not ok or self.path != "/api/v1/nodes/node-a/proxy/metrics/cadvisor":
                self.send_error(403 if not ok else 404)
                return
            body = CADVISOR_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPIServer)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    api.socket = ctx.wrap_socket(api.socket, server_side=True)
    threading.Thread(target=api.serve_forever, daemon=True).start()

    # The shipped config with only what cannot exist here replaced: node discovery (file
    # discovery with the same __meta label), the API server's address, the pod's credential
    # files, the interval (1 s, to keep the test short) and the self-scrape job.
    cfg = prometheus_config()
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["scrape_timeout"] = "1s"
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "kubernetes-cadvisor"]
    cfg["scrape_configs"] = [job]
    del job["kubernetes_sd_configs"]
    targets = [{"targets": ["node-a:10250"], "labels": {"__meta_kubernetes_node_name": "node-a"}}]
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")]}]
    (addr,) = [r for r in job["relabel_configs"] if r["target_label"] == "__address__"]
    addr["replacement"] = f"127.0.0.1:{api.server_address[1]}"
    job["tls_config"]["ca_file"] = str(ca)
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )

    def query(q: str) -> list[dict[str, Any]]:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback only)
            result: list[dict[str, Any]] = json.load(resp)["data"]["result"]
            return result

    try:
        deadline = time.monotonic() + 40
        cpu: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not cpu:
            time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                cpu = query('container_cpu_usage_seconds_total{container="istio-proxy"}')
            except OSError:
                continue
        assert cpu, (seen, (tmp_path / "prometheus.log").read_text()[-2000:])
        (series,) = cpu
        assert float(series["value"][1]) == 12.5
        assert series["metric"]["node"] == "node-a"
        assert series["metric"]["job"] == "kubernetes-cadvisor"
        assert series["metric"]["pod"] == "fortioserver-6f7d"
        mem = query("container_memory_working_set_bytes")
        assert [float(s["value"][1]) for s in mem] == [52428800.0]
        assert query("container_fs_reads_total") == []  # dropped by metric_relabel_configs
        assert [float(s["value"][1]) for s in query('up{job="kubernetes-cadvisor"}')] == [1.0]
        assert ("/api/v1/nodes/node-a/proxy/metrics/cadvisor", f"Bearer {token}") in seen
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        api.shutdown()
        api.server_close()


# --------------------------------------------------------------------------------------------
# Every set-up command the docs show runs (under DRY_RUN, against the stubs)

DOCS = ("istio-install/README.md", "linkerd/README.md", "docs/cluster.md")
PLACEHOLDERS = {"<your-gcp-project>": "my-project", "<ISTIO_RELEASE>": "1.24.2"}


def doc_commands() -> list[tuple[str, dict[str, str], str, list[str]]]:
    """(doc, env assignments, script, args) of each documented set-up script call."""
    found = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for key, value in PLACEHOLDERS.items():
            text = text.replace(key, value)
        in_block = False
        for line in text.replace("\\\n", " ").splitlines():
            if line.startswith("```"):
                in_block = line.strip() in ("```bash", "```shell")
                continue
            if not in_block or ".sh" not in line:
                continue
            words = shlex.split(line, comments=True)
            env = {}
            while words and "=" in words[0] and not words[0].startswith(("-", ".", "/")):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if not words or not words[0].endswith(".sh"):
                continue
            path = words[0].lstrip("./")
            script = next((s for s in SCRIPTS if path.endswith(s)), path)
            found.append((doc, env, script, words[1:]))
    return found


def test_docs_show_every_script() -> None:
    scripts = {script for _, _, script, _ in doc_commands()}
    assert scripts >= {s for s in SCRIPTS if not s.endswith("lib.sh")}


@pytest.mark.parametrize(
    ("doc", "env", "script", "args"),
    doc_commands(),
    ids=[f"{d}:{' '.join([*e.values(), s, *a])}" for d, e, s, a in doc_commands()],
)
def test_documented_commands_run(
    stubs: Stubs, doc: str, env: dict[str, str], script: str, args: list[str]
) -> None:
    assert script in SCRIPTS, f"{doc} calls {script}, which does not exist"
    proc = stubs.run(script, *args, env={**env, "DRY_RUN": "1"})
    assert proc.returncode == 0, (doc, proc.stderr)
    assert stubs.calls() == []
    assert plan(proc.stdout)  # each printed command checked for its time limit


@pytest.mark.skipif(platform.system() != "Linux", reason="release asset names are per OS")
@skip_unless(shutil.which("shasum") is not None, "needs Perl's shasum")
@pytest.mark.parametrize("good", [True, False])
def test_checksum_with_shasum_when_sha256sum_is_missing(
    tmp_path: Path, sysbin: Path, good: bool
) -> None:
    """macOS has no sha256sum: the download check falls back to ``shasum -a 256``."""
    macbin = tmp_path / "macbin"
    macbin.mkdir()
    for tool in sysbin.iterdir():
        if tool.name != "sha256sum":
            (macbin / tool.name).symlink_to(os.readlink(tool))
    (macbin / "shasum").symlink_to(shutil.which("shasum") or "")
    root = tmp_path / "s"
    root.mkdir()
    stubs = Stubs(root, macbin, ("kubectl", "curl"))
    fake_release(
        stubs,
        ISTIO_URL,
        "istioctl",
        stub_script(stubs, "istioctl-1.24.2"),
        tarball=True,
        digest=None if good else "1" * 64,
    )
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.24.2",
        env={"ISTIO_CACHE": str(root / "cache"), "SKIP_PROMETHEUS": "1"},
    )
    if good:
        assert proc.returncode == 0, proc.stderr
        assert stubs.argvs("istioctl-1.24.2")[0][0] == "install"
    else:
        assert "checksum mismatch" in one_line_error(proc, "setup_istio.sh", 1)
        assert stubs.calls("istioctl-1.24.2") == []
