"""``--perf``: profile the server-side proxy with ``perf`` and write a flame graph locally.

How: once per run an ephemeral debug container (image ``--perf-image``, which must hold
``perf`` and ``pgrep``) is added to the server pod with ``targetContainerName`` set to the proxy
container, so it sees the proxy's processes. During each test, execs in that container find
the proxy (``pgrep``), record it (``perf record -F 99 -g -p PID -- sleep N``) and print the
samples (``perf script``); ``meshperf.flamegraph`` folds the stacks and draws an SVG flame
graph under ``<output-dir>/perf/``. Any failure is recorded in ``meshperf.perf.error`` and the
matrix goes on: profiling is an extra, never a reason to lose a measurement.

The debug container is started when the platform starts (and again for a replaced server
pod, before its next test), so its image pull and start-up (up to ``READY_TIMEOUT``) never
fall inside a test's recording window. An ephemeral container cannot be removed, restarted
or re-added under its name (Kubernetes does not allow it), so it must outlive the whole run:
it sleeps ``DEBUG_TTL`` (about 68 years, as setup_test.sh's tools container) and goes away
with the pod. Each run adds its own, named after the run id.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshperf import flamegraph
from meshperf.errors import ClusterError
from meshperf.flamegraph import FREQUENCY
from meshperf.kube.execs import SHORT_EXEC_TIMEOUT, run_exec
from meshperf.plan import repeat_label
from meshperf.platform import RunOptions, TestSpec

if TYPE_CHECKING:
    from meshperf.kube.cluster import Cluster, PodInfo

# Seconds the debug container sleeps: the largest value every sleep (busybox too) accepts.
# A shorter life would turn every later test's exec into an error (it cannot be restarted).
DEBUG_TTL = 2147483647
PERF_FREQ = FREQUENCY  # Hz, as the 2019 scripts' get_perfdata.sh
MAX_RECORD_SECONDS = 40.0  # the 2019 scripts recorded 40 s of each test
READY_TIMEOUT = 90.0  # image pull + start of the debug container
# The process to profile in each mesh's proxy container.
PROXY_PROCESS: dict[str, tuple[str, str]] = {
    "istio": ("istio-proxy", "envoy"),
    "linkerd": ("linkerd-proxy", "linkerd2-proxy"),
}
_PID_RE = re.compile(r"[0-9]{1,9}")


def debug_container_spec(name: str, image: str, target: str) -> dict[str, Any]:
    """The ephemeral container added to the server pod (camelCase: sent as a raw patch)."""
    return {
        "name": name,
        "image": image,
        "command": ["sleep", str(DEBUG_TTL)],
        "targetContainerName": target,
        "stdin": False,
        "tty": False,
        # perf_event_open on another process needs these (PERFMON on kernels >= 5.8).
        "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "SYS_PTRACE", "PERFMON"]}},
    }


def record_argv(pid: str, seconds: float, data_file: str) -> list[str]:
    if not _PID_RE.fullmatch(pid):
        raise ClusterError(f"not a process id: {pid!r}")
    return [
        "perf", "record", "-F", str(PERF_FREQ), "-g", "-p", pid, "-o", data_file,
        "--", "sleep", str(max(1, int(seconds))),
    ]  # fmt: skip


def script_argv(data_file: str) -> list[str]:
    return ["perf", "script", "-i", data_file, "--demangle"]


def record_window(duration: float) -> tuple[float, float]:
    """(delay, seconds): record the middle of the test, at most MAX_RECORD_SECONDS."""
    seconds = min(MAX_RECORD_SECONDS, max(1.0, duration * 0.5))
    delay = max(0.0, (duration - seconds) / 2)
    return delay, seconds


# -- the recorder ----------------------------------------------------------------------------


class PerfJob:
    """One test's recording, in a thread; ``finish`` returns the ``meshperf.perf`` block."""

    def __init__(self, recorder: PerfRecorder, spec: TestSpec) -> None:
        self.recorder = recorder
        self.spec = spec
        self.info: dict[str, Any] = {}
        self.cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshperf-perf", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.info = {"flamegraph": str(self.recorder.profile(self.spec, self.cancel))}
        except ClusterError as e:
            self.info = {"error": str(e)}
        except Exception as e:  # a profiling bug must not cost the measurement
            self.info = {"error": f"{type(e).__name__}: {e}"}

    def finish(self, cancel: bool = False, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the recording; ``cancel`` (the test failed or was stopped) gives up on it."""
        if cancel:
            self.cancel.set()
            timeout = min(timeout, 2.0)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return {"error": "perf " + ("cancelled" if cancel else "did not finish in time")}
        return self.info


class PerfRecorder:
    """Adds the debug container once, then records the proxy during each test."""

    def __init__(self, cluster: Cluster, server: PodInfo, opts: RunOptions) -> None:
        self.cluster = cluster
        self.server = server
        self.opts = opts
        self.container = f"meshperf-perf-{opts.run_id or 'run'}"
        self._ready = False
        self._lock = threading.Lock()
        self._setup_error = ""
        self._closed = threading.Event()
        self._jobs: list[PerfJob] = []

    def prepare(self) -> None:
        """Add the debug container and wait for it now, outside any test; a failure is kept
        and reported in each test's ``perf.error`` (the tests still run)."""
        try:
            self.ensure_debug_container()
        except ClusterError:
            pass  # kept in _setup_error; profile() raises it for each test

    def start(self, spec: TestSpec) -> PerfJob:
        job = PerfJob(self, spec)
        self._jobs.append(job)
        self._jobs = [j for j in self._jobs if j._thread.is_alive()]
        return job

    def _proxy(self) -> tuple[str, str]:
        mesh = self.opts.mesh
        if mesh not in PROXY_PROCESS:
            raise ClusterError(f"--perf: mesh {mesh} has no proxy in the server pod to profile")
        container, process = PROXY_PROCESS[mesh]
        if container not in self.server.containers + self.server.init_containers:
            raise ClusterError(f"--perf: server pod {self.server.name} has no {container}")
        return container, process

    def ensure_debug_container(self) -> None:
        with self._lock:
            if self._ready:
                return
            if self._setup_error:
                raise ClusterError(self._setup_error)
            try:
                self._add_debug_container()
                self._ready = True
            except ClusterError as e:
                self._setup_error = str(e)
                raise

    def _add_debug_container(self) -> None:
        if not self.opts.perf_image:
            raise ClusterError("--perf needs --perf-image (an image with perf and pgrep)")
        target, _ = self._proxy()
        pod = self.cluster.read_pod(self.server.name)
        present = {c.name for c in pod.spec.ephemeral_containers or []}
        if self.container not in present:
            spec = debug_container_spec(self.container, self.opts.perf_image, target)
            existing = [
                self.cluster.core.api_client.sanitize_for_serialization(c)
                for c in pod.spec.ephemeral_containers or []
            ]
            body = {"spec": {"ephemeralContainers": existing + [spec]}}
            try:
                self.cluster.core.patch_namespaced_pod_ephemeralcontainers(
                    self.server.name, self.server.namespace, body, _request_timeout=(5, 20)
                )
            except Exception as e:
                raise ClusterError(
                    f"--perf: adding the debug container to {self.server.name} failed: "
                    f"{getattr(e, 'reason', None) or e}"
                ) from e
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            pod = self.cluster.read_pod(self.server.name)
            for st in pod.status.ephemeral_container_statuses or []:
                if st.name != self.container or st.state is None:
                    continue
                if st.state.running is not None:
                    return
                if st.state.terminated is not None:
                    reason = st.state.terminated.reason
                    raise ClusterError(f"--perf: debug container exited ({reason})")
                waiting = st.state.waiting
                if waiting is not None and waiting.reason in (
                    "ErrImagePull",
                    "ImagePullBackOff",
                    "InvalidImageName",
                    "CreateContainerError",
                ):
                    detail = waiting.reason + (f": {waiting.message}" if waiting.message else "")
                    raise ClusterError(
                        f"--perf: debug container {self.opts.perf_image} cannot start ({detail})"
                    )
            if time.monotonic() > deadline or self._closed.wait(0.5):
                raise ClusterError("--perf: debug container did not start in time")

    def _exec(self, argv: list[str], timeout: float = SHORT_EXEC_TIMEOUT) -> str:
        res = run_exec(
            self.cluster.core,
            self.server.name,
            self.server.namespace,
            self.container,
            argv,
            timeout=timeout,
        )
        if not res.ok:
            raise ClusterError("--perf: " + res.describe_failure())
        return res.stdout.decode("utf-8", "replace")

    def profile(self, spec: TestSpec, cancel: threading.Event) -> Path:
        _, process = self._proxy()
        self.ensure_debug_container()
        delay, seconds = record_window(spec.duration)
        if cancel.wait(delay) or self._closed.is_set():
            raise ClusterError("--perf: cancelled")
        pids = self._exec(["pgrep", "-o", "-x", process]).split()
        if not pids:
            raise ClusterError(f"--perf: no {process} process in the proxy container")
        label = repeat_label(spec.labels or spec.mode, spec.repeat)
        data_file = f"/tmp/meshperf-{label}.perf.data"
        self._exec(record_argv(pids[0], seconds, data_file), timeout=seconds + SHORT_EXEC_TIMEOUT)
        script = self._exec(script_argv(data_file), timeout=120.0)
        folded = flamegraph.fold(script)
        if not folded:
            raise ClusterError("--perf: perf recorded no samples")
        svg = Path(self.opts.output_dir) / "perf" / f"{label}.svg"
        return flamegraph.write(folded, svg, f"{process} in {self.server.name}: {label}")

    def close(self) -> None:
        self._closed.set()
        for job in self._jobs:
            job.cancel.set()
