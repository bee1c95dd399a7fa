"""``--platform auto``: kubernetes when a kubeconfig context is usable, else local.

Usable means: the files of ``$KUBECONFIG`` (merged as kubectl merges them) or
``~/.kube/config`` name a current context (or the one ``--context`` asks for), that context's
cluster has a server URL, and the server answers ``GET /version`` with 200 within 2 s. The
kubeconfig is read as plain YAML so the slow ``kubernetes`` package is imported only once
kubernetes is actually chosen.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROBE_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class Choice:
    platform: str  # "local" | "kubernetes"
    reason: str
    kubeconfig: str | None = None
    context: str | None = None


def kubeconfig_paths(env: Mapping[str, str], home: Path | None = None) -> list[Path]:
    """The kubeconfig files kubectl would merge, in order (those that exist)."""
    listed = env.get("KUBECONFIG", "")
    if listed:
        return [Path(part) for part in listed.split(os.pathsep) if part and Path(part).is_file()]
    p = (home or Path.home()) / ".kube" / "config"
    return [p] if p.is_file() else []


# File fields kubectl resolves against the directory of the kubeconfig that names them
# (k8s.io/client-go tools/clientcmd loader.go ResolveLocalPaths).
_PATH_FIELDS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


def _resolve_paths(key: str, item: dict[str, Any], base: Path) -> dict[str, Any]:
    """``item`` with its relative file fields made absolute against ``base``."""
    if key not in _PATH_FIELDS:
        return item
    inner_key, fields = _PATH_FIELDS[key]
    inner = item.get(inner_key)
    if not isinstance(inner, dict):
        return item
    inner = dict(inner)
    for field in fields:
        value = inner.get(field)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            inner[field] = str(base / value)
    return {**item, inner_key: inner}


def merged(paths: list[Path]) -> tuple[dict[str, Any], str | None]:
    """kubectl's merge of several kubeconfig files: for ``current-context`` and for each named
    context, cluster and user, the first file that sets it wins; relative file paths are made
    absolute against the file that names them, as kubectl does. Returns (config, problem).

    The one merge: ``--platform auto`` probes the result, and the kubernetes platform hands the
    same dict to the client (``meshperf.kube.cluster.connect``)."""
    import yaml

    out: dict[str, Any] = {"contexts": [], "clusters": [], "users": []}
    for path in paths:
        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            return out, f"kubeconfig {path} unreadable ({type(e).__name__})"
        if not isinstance(cfg, dict):
            return out, f"kubeconfig {path} is not a mapping"
        if not out.get("current-context") and cfg.get("current-context"):
            out["current-context"] = cfg["current-context"]
        for key in ("contexts", "clusters", "users"):
            items = cfg.get(key)
            if not isinstance(items, list):  # a hand-edited kubeconfig may hold anything here
                continue
            seen = {i.get("name") for i in out[key]}
            out[key] += [
                _resolve_paths(key, i, path.resolve().parent)
                for i in items
                if isinstance(i, dict) and i.get("name") not in seen
            ]
    return out, None


def _named(items: list[dict[str, Any]], name: str, key: str) -> dict[str, Any] | None:
    for item in items:
        if item.get("name") == name and isinstance(item.get(key), dict):
            return item[key]  # type: ignore[no-any-return]
    return None


def _probe(server: str, cluster: Mapping[str, Any], user: Mapping[str, Any]) -> str | None:
    """None when ``server``/version answered 200, else why not."""
    import requests  # only when there is a kubeconfig to probe

    verify: bool | str = True
    ca_file: str | None = None
    try:
        if cluster.get("insecure-skip-tls-verify"):
            verify = False
        elif cluster.get("certificate-authority-data"):
            fd, ca_file = tempfile.mkstemp(prefix="meshperf-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(cluster["certificate-authority-data"]))
            verify = ca_file
        elif cluster.get("certificate-authority"):
            verify = str(cluster["certificate-authority"])
        headers = {}
        token = user.get("token")
        if isinstance(token, str) and token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = requests.get(
                server.rstrip("/") + "/version",
                headers=headers,
                verify=verify,
                timeout=PROBE_TIMEOUT,
            )
        except requests.RequestException as e:
            return (
                f"{server} did not answer /version within {PROBE_TIMEOUT:g} s ({type(e).__name__})"
            )
        if r.status_code != 200:
            return f"{server}/version answered HTTP {r.status_code}"
        return None
    except (ValueError, OSError) as e:
        return f"cannot use the cluster's TLS settings: {e}"
    finally:
        if ca_file:
            os.unlink(ca_file)


def choose_platform(
    requested: str,
    env: Mapping[str, str] | None = None,
    context: str | None = None,
    home: Path | None = None,
) -> Choice:
    """Resolve ``auto``; ``local`` and ``kubernetes`` are taken as given."""
    env = os.environ if env is None else env
    paths = kubeconfig_paths(env, home)
    # The whole list, as kubectl and the kubernetes client merge it.
    kc = os.pathsep.join(str(p) for p in paths) or None
    if requested != "auto":
        return Choice(requested, f"--platform {requested}", kc, context)
    if not paths:
        where = "$KUBECONFIG" if env.get("KUBECONFIG") else "~/.kube/config"
        return Choice("local", f"no kubeconfig ({where} not found)")
    cfg, problem = merged(paths)
    if problem:
        return Choice("local", problem)
    named = str(paths[0]) if len(paths) == 1 else f"({kc})"
    ctx_name = context or cfg.get("current-context")
    if not ctx_name:
        return Choice("local", f"kubeconfig {named} has no current context")
    ctx = _named(cfg["contexts"], ctx_name, "context")
    if ctx is None:
        return Choice("local", f"kubeconfig {named} has no context {ctx_name!r}")
    cluster = _named(cfg["clusters"], ctx.get("cluster", ""), "cluster") or {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        return Choice("local", f"context {ctx_name!r} has no cluster server URL")
    user = _named(cfg["users"], ctx.get("user", ""), "user") or {}
    why_not = _probe(server, cluster, user)
    if why_not:
        return Choice("local", f"context {ctx_name!r}: {why_not}")
    return Choice("kubernetes", f"context {ctx_name!r} at {server} answers", kc, ctx_name)
