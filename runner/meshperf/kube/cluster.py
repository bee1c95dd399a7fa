"""Talking to the cluster: configuration, pod lookup and readiness, versions, nodes.

Configuration comes from a kubeconfig (``--kubeconfig`` / ``$KUBECONFIG`` / ``~/.kube/config``,
context ``--context`` or the current one) or, inside a pod, from the service account. Every API
call carries a timeout and no retries, so an unreachable API server costs seconds, not minutes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from meshperf import choose
from meshperf.errors import ClusterError
from meshperf.kube import paths
from meshperf.platform import RunOptions

API_TIMEOUT = (5.0, 20.0)  # (connect, read) seconds for ordinary API calls

CLIENT_LABEL = "app=fortioclient"
SERVER_LABEL = "app=fortioserver"
# Containers a mesh injects into a pod; never the load generator.
PROXY_CONTAINERS = paths.PROXY_CONTAINERS
INIT_CONTAINERS: frozenset[str] = frozenset({"istio-init", "istio-validation", "linkerd-init"})
LOAD_CONTAINER = "captured"  # the 2019 scripts' fortio container in the client pod
TOOLS_CONTAINER = "tools"  # setup_test.sh's busybox container: pkill in a shared PID namespace
DATA_DIR = "/var/lib/fortio"  # the client's fortio data dir, listed by its report UI
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
LEGACY_INSTANCE_TYPE_LABEL = "beta.kubernetes.io/instance-type"

_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SELECTOR_RE = re.compile(
    r"[A-Za-z0-9][-A-Za-z0-9_./]*!?==?[-A-Za-z0-9_.]*"
    r"(,[A-Za-z0-9][-A-Za-z0-9_./]*!?==?[-A-Za-z0-9_.]*)*"
)


@dataclasses.dataclass(frozen=True)
class Connection:
    """An API client plus where it points, for messages."""

    api: kclient.ApiClient
    context: str  # "in-cluster" when from the service account
    server: str


@dataclasses.dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    ip: str
    node: str
    labels: dict[str, str]
    containers: tuple[str, ...]  # regular containers, in spec order
    init_containers: tuple[str, ...]
    raw: Any  # the V1Pod, for resources and statuses

    def load_container(self) -> str:
        """``captured`` if present, else the first container that is not a mesh proxy."""
        if LOAD_CONTAINER in self.containers:
            return LOAD_CONTAINER
        for name in self.containers:
            if name not in PROXY_CONTAINERS:
                return name
        raise ClusterError(f"pod {self.namespace}/{self.name} has no container to run fortio in")

    def stop_container(self) -> str:
        """Where ``pkill`` runs to stop fortio: the tools container if the pod has one (the
        fortio image has no pkill), else the load container itself."""
        if TOOLS_CONTAINER in self.containers:
            return TOOLS_CONTAINER
        return self.load_container()

    def result_dirs(self) -> tuple[str, str] | None:
        """(data dir in the load container, the same directory in the tools container) when
        fortio's data dir (``DATA_DIR``, the report UI's) is also mounted in the tools
        container, so a result fortio writes there can be read back with ``cat``; else None."""
        mounts: dict[str, dict[str, str]] = {}
        for c in self.raw.spec.containers or []:
            mounts[c.name] = {m.name: m.mount_path for m in c.volume_mounts or []}
        load = mounts.get(self.load_container(), {})
        tools = mounts.get(TOOLS_CONTAINER, {})
        for volume, path in load.items():
            if path.rstrip("/") == DATA_DIR and volume in tools:
                return DATA_DIR, tools[volume].rstrip("/")
        return None

    def proxy_workers(self) -> dict[str, dict[str, Any]]:
        """Worker threads of the mesh proxy containers, by container name, as the pod spec
        sets them: Istio's ``concurrency`` (the ``PROXY_CONFIG`` env the injector writes from
        ``proxy.istio.io/config``; absent: the mesh-wide default, which the perf overlay sets
        to 2), Linkerd's ``LINKERD2_PROXY_CORES`` (from its CPU request, linkerd2
        pkg/inject/inject.go)."""
        out: dict[str, dict[str, Any]] = {}
        spec = self.raw.spec
        for c in list(spec.containers or []) + list(spec.init_containers or []):
            if c.name not in PROXY_CONTAINERS:
                continue
            env = {e.name: e.value for e in c.env or [] if getattr(e, "value", None) is not None}
            if c.name == "linkerd-proxy":
                cores = env.get("LINKERD2_PROXY_CORES")
                out[c.name] = {
                    "workers": int(cores) if cores and cores.isdigit() else None,
                    "from": "LINKERD2_PROXY_CORES" if cores else "not set",
                }
            else:
                workers = _istio_concurrency(env.get("PROXY_CONFIG", ""))
                out[c.name] = {
                    "workers": workers,
                    "from": "PROXY_CONFIG concurrency"
                    if workers is not None
                    else "mesh default (meshConfig.defaultConfig.concurrency)",
                }
        return out

    def proxy_resources(self) -> dict[str, dict[str, dict[str, str]]]:
        """requests/limits of the mesh proxy containers, by container name."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        spec = self.raw.spec
        for c in list(spec.containers or []) + list(spec.init_containers or []):
            if c.name in PROXY_CONTAINERS:
                res = c.resources
                out[c.name] = {
                    "requests": dict((res.requests if res else None) or {}),
                    "limits": dict((res.limits if res else None) or {}),
                }
        return out


def resolve_kubeconfig(opts: RunOptions) -> str | None:
    """The kubeconfig path(s) to use (a list joined with the path separator, as KUBECONFIG
    holds it), or None for in-cluster configuration. The files are the ones ``--platform
    auto`` looked at (``meshperf.choose.kubeconfig_paths``)."""
    if opts.kubeconfig:
        return opts.kubeconfig
    found = choose.kubeconfig_paths(os.environ)
    return os.pathsep.join(str(p) for p in found) if found else None


def connect(opts: RunOptions) -> Connection:
    """Build an API client from the kubeconfig or the in-cluster service account."""
    path = resolve_kubeconfig(opts)
    cfg = kclient.Configuration()
    if path is None:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise ClusterError(
                "no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not "
                "running in a cluster",
                hint="point --kubeconfig or KUBECONFIG at a cluster's config, pick one with "
                "--context, or use --platform local",
            )
        try:
            kconfig.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise ClusterError(f"in-cluster configuration failed: {e}") from e
        context = "in-cluster"
    else:
        # Merged once, by meshperf.choose (the same merge --platform auto probed), then given
        # to the client as one config.
        files = [Path(p) for p in path.split(os.pathsep) if p]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ClusterError(
                f"kubeconfig {missing[0]} not found",
                hint="point --kubeconfig or KUBECONFIG at a cluster's config",
            )
        config_dict, problem = choose.merged(files)
        if problem:
            what = f"context {opts.context!r}" if opts.context else "the current context"
            raise ClusterError(
                f"cannot load {what} from kubeconfig {path}: {problem}",
                hint="pick another with --context, or another file with --kubeconfig / KUBECONFIG",
            )
        try:
            kconfig.load_kube_config_from_dict(
                config_dict,
                context=opts.context,
                client_configuration=cfg,
                persist_config=False,
            )
        # The client trusts the file's shape: a malformed one surfaces as TypeError & co.
        except (ConfigException, OSError, ValueError, TypeError, AttributeError, KeyError) as e:
            what = f"context {opts.context!r}" if opts.context else "the current context"
            raise ClusterError(
                f"cannot load {what} from kubeconfig {path}: {str(e).splitlines()[0]}",
                hint="pick another with --context, or another file with --kubeconfig / KUBECONFIG",
            ) from e
        context = opts.context or str(config_dict.get("current-context") or "current")
    cfg.retries = 0  # fail fast; the caller decides whether to try again
    return Connection(kclient.ApiClient(configuration=cfg), context, str(cfg.host))


def _close_api(api: kclient.ApiClient) -> None:
    try:
        api.close()
    except Exception:  # noqa: S110 - closing a pool that never opened is fine
        pass


def _short(e: BaseException) -> str:
    if isinstance(e, ApiException):
        text = f"HTTP {e.status} {e.reason}" if e.status else str(e.reason)
    else:
        text = str(e)
    # urllib3's messages nest the real cause at the end: keep the last useful clause.
    m = re.search(
        r"(\[Errno [^\]]+\][^'\")]*|Connection refused|timed out|Name or service "
        r"not known|certificate verify failed[^'\")]*)",
        text,
    )
    if m:
        return m.group(1).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def validate_pod_ref(ref: str, what: str) -> str:
    """A pod name or an equality label selector; anything else is refused."""
    if "=" in ref:
        if not _SELECTOR_RE.fullmatch(ref):
            raise ClusterError(f"{what} selector {ref!r} is not a label selector like app=fortio")
    elif not _NAME_RE.fullmatch(ref):
        raise ClusterError(f"{what} {ref!r} is not a valid pod name")
    return ref


class Cluster:
    """The API calls meshperf makes, with timeouts and one-line errors."""

    def __init__(self, conn: Connection, namespace: str) -> None:
        if not _NAME_RE.fullmatch(namespace):
            raise ClusterError(f"namespace {namespace!r} is not a valid Kubernetes name")
        self.conn = conn
        self.namespace = namespace
        self.core = kclient.CoreV1Api(conn.api)
        self.apps = kclient.AppsV1Api(conn.api)

    def _fail(self, action: str, e: BaseException) -> ClusterError:
        pick = "pick another cluster with --context or KUBECONFIG"
        if isinstance(e, ApiException) and e.status:
            why = f"HTTP {e.status} {e.reason}"
            if e.status in (401, 403):
                why += f" (check the credentials of this context, or {pick})"
            return ClusterError(f"{action} failed (context {self.conn.context}): {why}")
        return ClusterError(
            f"cannot reach the Kubernetes API server {self.conn.server} (context "
            f"{self.conn.context}) while {action}: {_short(e)}; {pick}"
        )

    def version(self) -> str:
        try:
            info = kclient.VersionApi(self.conn.api).get_code(_request_timeout=API_TIMEOUT)
        except Exception as e:
            raise self._fail("reading /version", e) from e
        return str(info.git_version)

    def find_pod(self, ref: str | None, default_label: str, role: str) -> PodInfo:
        """The Running and Ready pod named or selected by ``ref`` (default: ``default_label``)."""
        ref = validate_pod_ref(ref, role) if ref else default_label
        pods: list[Any]  # V1Pod; typed as Any since every field of the models is Optional
        setup = f"NAMESPACE={self.namespace} ./setup_test.sh"
        try:
            if "=" in ref:
                pods = _items(
                    self.core.list_namespaced_pod(
                        self.namespace, label_selector=ref, _request_timeout=API_TIMEOUT
                    )
                )
            else:
                pods = [
                    _any(
                        self.core.read_namespaced_pod(
                            ref, self.namespace, _request_timeout=API_TIMEOUT
                        )
                    )
                ]
        except ApiException as e:
            if e.status == 404:
                pods = []
            else:
                raise self._fail(f"looking up the {role} pod", e) from e
        except Exception as e:
            raise self._fail(f"looking up the {role} pod", e) from e
        how = f"with label {ref}" if "=" in ref else f"named {ref}"
        if not pods:
            raise ClusterError(
                f"no {role} pod {how} in namespace {self.namespace}; deploy the fortio client "
                f"and server with {setup}"
            )
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        ready = [p for p in live if _is_ready(p)]
        if not ready:
            bad = (live or pods)[0]
            raise ClusterError(
                f"{role} pod {self.namespace}/{bad.metadata.name} is not ready "
                f"({_why_not_ready(bad)}); wait for it, or redeploy with {setup}"
            )
        p = sorted(ready, key=lambda x: str(x.metadata.name))[0]
        if not p.status.pod_ip:
            raise ClusterError(f"{role} pod {self.namespace}/{p.metadata.name} has no IP yet")
        return PodInfo(
            name=p.metadata.name,
            namespace=p.metadata.namespace or self.namespace,
            ip=p.status.pod_ip,
            node=p.spec.node_name or "",
            labels=dict(p.metadata.labels or {}),
            containers=tuple(c.name for c in p.spec.containers or []),
            init_containers=tuple(c.name for c in p.spec.init_containers or []),
            raw=p,
        )

    def read_pod(self, name: str) -> Any:
        try:
            return self.core.read_namespaced_pod(name, self.namespace, _request_timeout=API_TIMEOUT)
        except Exception as e:
            raise self._fail(f"reading pod {name}", e) from e

    def service(self, name: str) -> Any | None:
        try:
            return self.core.read_namespaced_service(
                name, self.namespace, _request_timeout=API_TIMEOUT
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._fail(f"reading service {name}", e) from e
        except Exception as e:
            raise self._fail(f"reading service {name}", e) from e

    def namespace_labels(self) -> dict[str, str]:
        try:
            ns = _any(self.core.read_namespace(self.namespace, _request_timeout=API_TIMEOUT))
        except Exception as e:
            raise self._fail(f"reading namespace {self.namespace}", e) from e
        return dict(ns.metadata.labels or {})

    def nodes(self) -> list[dict[str, Any]]:
        items: list[Any]
        try:
            items = _items(self.core.list_node(_request_timeout=API_TIMEOUT))
        except Exception as e:
            raise self._fail("listing nodes", e) from e
        out = []
        for n in items:
            labels = n.metadata.labels or {}
            out.append(
                {
                    "name": n.metadata.name,
                    "instance_type": labels.get(INSTANCE_TYPE_LABEL)
                    or labels.get(LEGACY_INSTANCE_TYPE_LABEL)
                    or "",
                    "kubelet": (n.status.node_info.kubelet_version if n.status.node_info else ""),
                }
            )
        return out

    def pods_on_nodes(self, selector: str, nodes: set[str]) -> list[str]:
        """Names of the pods matching ``selector`` (any namespace) that run on ``nodes``."""
        items: list[Any]
        try:
            items = _items(
                self.core.list_pod_for_all_namespaces(
                    label_selector=selector, _request_timeout=API_TIMEOUT
                )
            )
        except Exception as e:
            raise self._fail(f"listing pods {selector}", e) from e
        return [str(p.metadata.name) for p in items if (p.spec.node_name or "") in nodes]

    def image_tag(self, kind: str, selector: str, container: str | None) -> str | None:
        """Image tag of the first deployment/daemonset matching ``selector`` in any namespace."""
        items: list[Any]
        try:
            if kind == "deployment":
                items = _items(
                    self.apps.list_deployment_for_all_namespaces(
                        label_selector=selector, _request_timeout=API_TIMEOUT
                    )
                )
            else:
                items = _items(
                    self.apps.list_daemon_set_for_all_namespaces(
                        label_selector=selector, _request_timeout=API_TIMEOUT
                    )
                )
        except Exception as e:
            raise self._fail(f"listing {kind}s {selector}", e) from e
        for item in items:
            for c in item.spec.template.spec.containers or []:
                if container is None or c.name == container:
                    return image_tag(c.image or "")
        return None

    def close(self) -> None:
        _close_api(self.conn.api)


def _istio_concurrency(proxy_config: str) -> int | None:
    """``concurrency`` of an istio-proxy's PROXY_CONFIG (JSON, or YAML as the annotation is
    written), or None when it does not set one. 0 means one worker per CPU of the node."""
    if not proxy_config.strip():
        return None
    try:
        import yaml

        cfg = yaml.safe_load(proxy_config)
    except Exception:  # a malformed config is not ours to judge here; record "not set"
        return None
    value = cfg.get("concurrency") if isinstance(cfg, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _any(obj: object) -> Any:
    """API objects as Any: the generated models type every field Optional."""
    return obj


def _items(resp: Any) -> list[Any]:
    return list(resp.items or [])


def image_tag(image: str) -> str:
    """``docker.io/istio/pilot:1.24.2@sha256:...`` -> ``1.24.2``; no tag -> ``latest``."""
    image = image.split("@", 1)[0]
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return "latest"
    return tag


def _is_ready(pod: Any) -> bool:
    if (pod.status.phase or "") != "Running":
        return False
    for c in pod.status.conditions or []:
        if c.type == "Ready":
            return c.status == "True"
    return False


def _why_not_ready(pod: Any) -> str:
    parts = [f"phase {pod.status.phase or 'Unknown'}"]
    if pod.metadata.deletion_timestamp is not None:
        parts.append("terminating")
    for c in pod.status.conditions or []:
        if c.type == "Ready" and c.status != "True":
            parts.append(f"Ready={c.status}" + (f": {c.message}" if c.message else ""))
    for cs in pod.status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason:
            parts.append(f"{cs.name} {waiting.reason}")
    return ", ".join(parts)
