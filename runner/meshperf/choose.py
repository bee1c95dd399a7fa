"""``--platform auto``: kubernetes when a kubeconfig context is usable, else local.

Usable means: ``$KUBECONFIG`` (first file of the list) or ``~/.kube/config`` names a current
context (or the one ``--context`` asks for), that context's cluster has a server URL, and the
server answers ``GET /version`` with 200 within 2 s. The kubeconfig is read as plain YAML so
the slow ``kubernetes`` package is imported only once kubernetes is actually chosen.
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


def kubeconfig_path(env: Mapping[str, str], home: Path | None = None) -> Path | None:
    """The kubeconfig file kubectl would read first, if it exists."""
    listed = env.get("KUBECONFIG", "")
    if listed:
        for part in listed.split(os.pathsep):
            if part and Path(part).is_file():
                return Path(part)
        return None
    p = (home or Path.home()) / ".kube" / "config"
    return p if p.is_file() else None


def _named(items: Any, name: str, key: str) -> dict[str, Any] | None:
    if not isinstance(items, list):  # a hand-edited kubeconfig may hold anything here
        return None
    for item in items:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(key), dict):
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
    path = kubeconfig_path(env, home)
    kc = str(path) if path else None
    if requested != "auto":
        return Choice(requested, f"--platform {requested}", kc, context)
    if path is None:
        where = "$KUBECONFIG" if env.get("KUBECONFIG") else "~/.kube/config"
        return Choice("local", f"no kubeconfig ({where} not found)")

    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return Choice("local", f"kubeconfig {path} unreadable ({type(e).__name__})")
    if not isinstance(cfg, dict):
        return Choice("local", f"kubeconfig {path} is not a mapping")
    ctx_name = context or cfg.get("current-context")
    if not ctx_name:
        return Choice("local", f"kubeconfig {path} has no current context")
    ctx = _named(cfg.get("contexts"), ctx_name, "context")
    if ctx is None:
        return Choice("local", f"kubeconfig {path} has no context {ctx_name!r}")
    cluster = _named(cfg.get("clusters"), ctx.get("cluster", ""), "cluster") or {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        return Choice("local", f"context {ctx_name!r} has no cluster server URL")
    user = _named(cfg.get("users"), ctx.get("user", ""), "user") or {}
    why_not = _probe(server, cluster, user)
    if why_not:
        return Choice("local", f"context {ctx_name!r}: {why_not}")
    return Choice("kubernetes", f"context {ctx_name!r} at {server} answers", str(path), ctx_name)
