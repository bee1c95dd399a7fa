"""The test matrix: flag value types, the YAML config file, mode selection, labels and the plan.

Everything here is pure (no processes, no network) so ``--dry-run`` and the tests can build
the exact plan a real run would execute.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import random
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from meshperf import limits, loadcmd
from meshperf.errors import ConfigError
from meshperf.kube import paths
from meshperf.labels import format_label, format_qps
from meshperf.platform import MODES, TestSpec

MESHES: tuple[str, ...] = ("istio", "istio-ambient", "linkerd", "none")
# Meshes whose control plane only exists in a cluster; the local platform emulates Istio.
CLUSTER_ONLY_MESHES: frozenset[str] = frozenset({"istio-ambient", "linkerd"})
# What the local platform runs for --mesh istio: Envoy sidecars configured the way Istio
# configures them (meshperf.local.envoy), with no istiod and no Istio filters. Results, run
# files and charts name that, not "istio", which did not run.
LOCAL_MESH = "envoy"
LOCAL_MESH_DESCRIPTION = "Envoy sidecars with an Istio-like configuration (no Istio control plane)"


def recorded_mesh(platform: str, mesh: str) -> str:
    """The mesh a result records: what ran. ``--mesh istio`` on the local platform is
    ``envoy``; everything else is what was asked for. Also maps results written before this
    rule (local, "istio") so ``--resume`` still finds them."""
    return LOCAL_MESH if platform == "local" and mesh == "istio" else mesh
PLATFORMS: tuple[str, ...] = ("auto", "local", "kubernetes")
LOAD_GENERATORS: tuple[str, ...] = ("builtin", "fortio")

LABEL_RE = re.compile(r"[A-Za-z0-9_.-]+")
LABEL_MAX = 63  # a Kubernetes label value's limit, so labels can also tag pods and series
RUN_ID_RE = re.compile(r"[0-9a-f]{8}")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")

# Seconds a test costs beyond its duration (warm-up, settling, collecting the result), and
# once per run (bringing the pods or processes up). Local: bench/bench_local_matrix.py on a
# 2-core machine measured 0.18 s per test and 0.8 s once when quiet, 0.5-1.0 s and 1.4 s when
# loaded (docs/runner.md); the values lean to the loaded side so the ETA is not optimistic.
# Kubernetes: estimates (exec round trips, copying the JSON back, pod lookups).
PER_TEST_OVERHEAD: dict[str, float] = {"local": 0.5, "kubernetes": 8.0}
START_OVERHEAD: dict[str, float] = {"local": 2.0, "kubernetes": 10.0}


# ---- argparse value types -------------------------------------------------------------------


def _csv_items(text: str, what: str) -> list[str]:
    items = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in items):
        raise argparse.ArgumentTypeError(f"invalid {what} list {text!r}: empty item")
    return items


def csv_ints(text: str) -> list[int]:
    """Comma list of connection counts, each >= 1; duplicates dropped, order kept."""
    out: list[int] = []
    for part in _csv_items(text, "connection"):
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid connection count {part!r} in {text!r}: not an integer"
            ) from None
        if n < 1:
            raise argparse.ArgumentTypeError(
                f"invalid connection count {n} in {text!r}: must be >= 1"
            )
        if n > limits.MAX_CONNECTIONS:  # the machine's own bound is checked once it is known
            raise argparse.ArgumentTypeError(
                f"invalid connection count {n} in {text!r}: above the bound of"
                f" {limits.MAX_CONNECTIONS} (the ephemeral port range)"
            )
        if n not in out:
            out.append(n)
    return out


def csv_floats(text: str) -> list[float]:
    """Comma list of QPS values, each >= 0 (0 = as fast as possible); duplicates dropped."""
    out: list[float] = []
    for part in _csv_items(text, "qps"):
        try:
            q = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid qps {part!r} in {text!r}: not a number"
            ) from None
        if not math.isfinite(q):  # "inf" is >= 0, so say what is wrong with it
            raise argparse.ArgumentTypeError(
                f"invalid qps {part!r} in {text!r}: not a finite number (0 = as fast as possible)"
            )
        if q < 0:
            raise argparse.ArgumentTypeError(f"invalid qps {part!r} in {text!r}: must be >= 0")
        if q not in out:
            out.append(q)
    return out








def label_text(text: str) -> str:
    """Extra labels: they end up in file names, fortio labels and (kubernetes) label values."""
    if text == "":
        return text  # no extra labels (argparse also runs string defaults through here)
    if len(text) > LABEL_MAX:
        raise argparse.ArgumentTypeError(f"labels {text!r} longer than {LABEL_MAX} characters")
    if not LABEL_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"labels {text!r} may only contain A-Z a-z 0-9 _ . -")
    return text


NO_TELEMETRY_LABEL = "notelemetry"


def run_labels(labels: str, telemetry: bool = True) -> str:
    """``--labels`` plus the ``notelemetry`` that ``--no-telemetry`` adds, checked as one label.

    The user only typed ``labels``: when the suffix is what pushes it over the limit, say so.
    """
    if telemetry:
        return label_text(labels)
    combined = f"{labels}_{NO_TELEMETRY_LABEL}" if labels else NO_TELEMETRY_LABEL
    if len(combined) > LABEL_MAX:
        room = LABEL_MAX - len(NO_TELEMETRY_LABEL) - 1
        raise argparse.ArgumentTypeError(
            f"labels {combined!r} are {len(combined)} characters, longer than {LABEL_MAX}:"
            f" --no-telemetry adds '_{NO_TELEMETRY_LABEL}' to --labels, which leaves"
            f" {room} characters for --labels"
        )
    return label_text(combined)


def repeat_label(label: str, repeat: int) -> str:
    """The name of one repeat's own files (flame graphs): ``--repeat`` runs share a label."""
    return f"{label}_r{repeat}" if repeat > 0 else label


def run_id_text(text: str) -> str:
    if not RUN_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"run id {text!r} must be 8 lower-case hex digits")
    return text


def ingress_address(text: str) -> str:
    """``[http[s]://]HOST[:PORT]`` of a kubernetes ingress gateway (``https://``: fortio speaks
    TLS to it, see ``--cacert``); never a URL with a path. "" = no value."""
    if text == "":
        return text
    try:
        loadcmd.split_ingress(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def new_run_id() -> str:
    return secrets.token_hex(4)


# ---- the YAML config file -------------------------------------------------------------------


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a ``--config`` YAML mapping; ConfigError on anything but a mapping of flag names."""
    import yaml  # only when a config file is used

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {p}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 - a SafeLoader
    except ConfigError as e:
        raise ConfigError(f"config {p}{e}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config {p}{line}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {p}: expected a mapping of option names to values")
    return data


def _unique_keys_loader() -> Any:
    """yaml.SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last
    one silently: ``baseline: true`` then ``baseline: false`` would just be false)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(
                        f" line {line}: duplicate key {key!r} (first on line {seen[key]})"
                    )
                seen[key] = line
            except TypeError:  # an unhashable key: construct_mapping says so itself
                break
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _config_string(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("expected a value, not true/false")
    if isinstance(value, list | tuple):
        return ",".join(_config_string(v) for v in value)
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"unsupported value {value!r}")


def config_defaults(
    parser: argparse.ArgumentParser, config: Mapping[str, Any], source: str = "config"
) -> dict[str, Any]:
    """Turn config keys (long flag names, dashes or underscores) into parser defaults.

    Values go through the same ``type=`` converters and ``choices`` as on the command line, so
    a config file cannot smuggle in what a flag would refuse. ``no-X: true`` means ``X: false``.
    Positional arguments (conn, qps, duration) are accepted too.
    """
    by_name: dict[str, argparse.Action] = {}
    action: argparse.Action | None
    for action in parser._actions:  # argparse has no public accessor for its actions
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if not action.option_strings:
            by_name[action.dest] = action
        for opt in action.option_strings:
            if opt.startswith("--"):
                by_name[opt[2:].replace("-", "_")] = action
    by_name.pop("config", None)

    out: dict[str, Any] = {}
    set_by: dict[str, str] = {}
    for raw_key, value in config.items():
        key = str(raw_key).replace("-", "_")
        action = by_name.get(key)
        if action is None:
            raise ConfigError(f"{source}: unknown option {raw_key!r}")
        if action.dest in set_by:
            # baseline + no-baseline, or output-dir + output_dir: which one was meant?
            raise ConfigError(
                f"{source}: {set_by[action.dest]!r} and {raw_key!r} both set the same option",
                hint="keep one of them",
            )
        set_by[action.dest] = str(raw_key)
        negated = key.startswith("no_") and key[3:] in by_name and by_name[key[3:]] is action
        try:
            out[action.dest] = _config_value(action, value, negated)
        except (TypeError, argparse.ArgumentTypeError, ValueError) as e:
            raise ConfigError(f"{source}: {raw_key}: {e}") from None
    return out


def _config_value(action: argparse.Action, value: Any, negated: bool) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return (not value) if negated else value
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError("expected a count >= 0")
        return value
    if action.nargs == "?" and action.const is not None and isinstance(value, bool):
        # --ingress without a value is "true"; false is the same as leaving it out.
        return action.const if value else None
    text = _config_string(value)
    converted = action.type(text) if callable(action.type) else text
    if action.choices is not None and converted not in action.choices:
        raise ValueError(
            f"invalid choice {text!r} (choose from {', '.join(map(str, action.choices))})"
        )
    return converted


# ---- modes, labels, the plan ----------------------------------------------------------------


def check_platform_rules(
    platform: str, why: str, *, mesh: str, ingress: str | None, cluster_flags: bool
) -> None:
    """Flags that only one platform understands. ``ingress`` is None without --ingress, ""
    for --ingress without a value; ``cluster_flags``: --client, --server or --perf-image."""
    if platform == "local":
        if mesh in CLUSTER_ONLY_MESHES:
            raise ConfigError(
                f"--mesh {mesh} needs a cluster; the local platform runs Istio-style"
                f" Envoy sidecars only (platform: local, {why})",
                hint="use --platform kubernetes with a kubeconfig whose cluster runs that mesh",
            )
        if ingress:
            raise ConfigError(
                f"--ingress takes no value on the local platform (got {ingress!r})",
                hint="use --ingress alone; the local platform starts its own gateway Envoy",
            )
        if cluster_flags:
            raise ConfigError(
                "--client, --server and --perf-image apply to --platform kubernetes only"
            )
    elif ingress == "":
        raise ConfigError(
            "--ingress needs the gateway's HOST[:PORT] on kubernetes",
            hint="e.g. --ingress $(kubectl -n istio-system get svc istio-ingressgateway"
            " -o jsonpath='{.status.loadBalancer.ingress[0].ip}')",
        )


def select_modes(
    *,
    baseline: bool | None,
    serversidecar: bool | None,
    clientsidecar: bool | None,
    ingress: bool,
    mesh: str,
    waypoint: bool = False,
    clientonly: bool = False,
) -> tuple[str, ...]:
    """The 2019 scripts' switches: ``both`` unless --no-clientsidecar; the others add their mode.
    A mode whose path the mesh cannot give is refused (``meshperf.kube.paths``)."""
    if waypoint and mesh != "istio-ambient":
        raise ConfigError(
            f"--waypoint needs --mesh istio-ambient (got --mesh {mesh})",
            hint="waypoint proxies exist only in Istio's ambient mode",
        )
    if mesh == "none":
        # Without a mesh there is no sidecar to put in the path: only the baseline exists.
        flags = (
            ("--serversidecar", serversidecar),
            ("--clientsidecar", clientsidecar),
            ("--clientonly", clientonly),
            ("--ingress", ingress),
        )
        asked = [f for f, v in flags if v]
        if asked:
            raise ConfigError(
                f"--mesh none has no sidecars: {', '.join(asked)} cannot run",
                hint="use --baseline alone, or pick a mesh",
            )
        return ("baseline",)
    wanted = {
        "baseline": bool(baseline),
        "serversidecar": bool(serversidecar),
        "clientonly": bool(clientonly),
        "both": clientsidecar is not False,
        "ingress": ingress,
        "waypoint": waypoint,
    }
    modes = tuple(m for m in MODES if wanted.get(m))
    for m in modes:
        refused = paths.refusal(mesh, m) if mesh in ("istio-ambient", "linkerd") else None
        if refused is not None:
            raise ConfigError(f"--mesh {mesh} --{m}: {refused[0]}", hint=refused[1])
    if not modes:
        raise ConfigError(
            "no sidecar mode selected",
            hint="add --baseline, --serversidecar or --ingress, or drop --no-clientsidecar",
        )
    return modes


def make_label(
    run_id: str, qps: float, conn: int, size: int, extra_labels: str, mode: str, protocol: str = ""
) -> str:
    """The 2019 scripts' label shape ``<runid>_qps_<qps>_c_<conn>_<size>[_<labels>]_<mode>``;
    ``protocol`` (``meshperf.loadcmd.label_token``: h2, grpc, tcp; "" for HTTP/1.1) leads the
    labels part."""
    extra_labels = "_".join(p for p in (protocol, extra_labels) if p)
    return format_label(run_id, qps, conn, size, mode, extra=extra_labels)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The resolved matrix, in execution order, and what it will cost in time."""

    run_id: str
    platform: str
    mesh: str
    modes: tuple[str, ...]
    tests: tuple[TestSpec, ...]
    per_test_overhead: float
    start_overhead: float
    shuffle_seed: int | None = None  # --shuffle: each repeat's tests in a seeded random order

    @property
    def test_seconds(self) -> float:
        return sum(t.duration for t in self.tests)

    def estimated_seconds(self, tests: Iterable[TestSpec] | None = None) -> float:
        chosen = list(self.tests if tests is None else tests)
        if not chosen:
            return 0.0
        return self.start_overhead + sum(t.duration + self.per_test_overhead for t in chosen)


def build_plan(
    *,
    conns: Sequence[int],
    qpss: Sequence[float],
    duration: float,
    modes: Sequence[str],
    platform: str,
    mesh: str,
    run_id: str,
    size: int = 1024,
    extra_labels: str = "",
    repeat: int = 1,
    qps_per_connection: bool = False,
    uniform: bool = False,
    jitter: bool = False,
    nocatchup: bool = False,
    resolution: float = 0.0001,
    load_options: Mapping[str, Any] | None = None,
) -> Plan:
    """Every repeat x conn x qps x mode, modes innermost so they run side by side in time.

    ``load_options`` are ``TestSpec``'s protocol fields (protocol, h2, headers, keepalive,
    connection_reuse, cacert); ``cacert`` goes to the ingress tests only, the one TLS target.

    Repeats are outermost: slow drift on the machine then spreads over all cells alike
    instead of piling onto the last ones.
    """
    load = dict(load_options or {})
    cacert = load.pop("cacert", "")
    token = loadcmd.label_token(load.get("protocol", "http"), bool(load.get("h2")))
    tests: list[TestSpec] = []
    for rep in range(repeat):
        for conn in conns:
            for q in qpss:
                total = q * conn if qps_per_connection else q
                for mode in modes:
                    tests.append(
                        TestSpec(
                            mode=mode,
                            conn=conn,
                            qps=float(total),
                            duration=float(duration),
                            size=size,
                            labels=make_label(
                                run_id, total, conn, size, extra_labels, mode, token
                            ),
                            extra_labels=extra_labels,
                            repeat=rep,
                            run_id=run_id,
                            uniform=uniform,
                            jitter=jitter,
                            nocatchup=nocatchup,
                            resolution=resolution,
                            cacert=cacert if mode == "ingress" else "",
                            **load,
                        )
                    )
    return Plan(
        run_id=run_id,
        platform=platform,
        mesh=mesh,
        modes=tuple(modes),
        tests=tuple(tests),
        per_test_overhead=PER_TEST_OVERHEAD.get(platform, 5.0),
        start_overhead=START_OVERHEAD.get(platform, 5.0),
    )


def shuffle_seed_of(run_id: str) -> int:
    """The seed ``--shuffle`` uses when none is given: from the run id, so it is recorded."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)


def shuffled(plan: Plan, seed: int) -> Plan:
    """The same tests, each repeat's in a random order (the same seed gives the same order).

    A fixed order puts each mode at the same place in every repeat, so anything that drifts
    through a repeat (a warming cache, a neighbour starting) lands on the same modes; pyperf
    randomises for the same reason. Repeats stay in sequence, so each still covers every test.
    """
    rng = random.Random(seed)
    by_repeat: dict[int, list[TestSpec]] = {}
    for t in plan.tests:
        by_repeat.setdefault(t.repeat, []).append(t)
    order: list[TestSpec] = []
    for rep in sorted(by_repeat):
        chunk = list(by_repeat[rep])
        rng.shuffle(chunk)
        order += chunk
    return dataclasses.replace(plan, tests=tuple(order), shuffle_seed=seed)


def describe_target(
    platform: str, mode: str, ingress: str | None = None, mesh: str = "istio"
) -> str:
    """Where the load goes in each mode, for the dry-run listing."""
    if platform == "local":
        return {
            "baseline": "loadgen -> app",
            "serversidecar": "loadgen -> server sidecar -> app",
            "clientonly": "loadgen -> client sidecar -> app (no server sidecar)",
            "both": "loadgen -> client sidecar =mTLS=> server sidecar -> app",
            "ingress": "loadgen -> gateway =mTLS=> server sidecar -> app",
            "waypoint": "loadgen -> waypoint -> app",
        }[mode]
    where = paths.path(mesh, mode)
    if mode == "ingress":
        where += f"; gateway {ingress or '(address not given)'}"
    return where


def format_seconds(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_plan(plan: Plan, ingress: str | None = None) -> str:
    """The ``--dry-run`` listing: one line per test, then the time estimate."""
    rows = [("#", "mode", "conn", "qps", "duration", "label", "protocol", "url", "target")]
    for i, t in enumerate(plan.tests, 1):
        rows.append(
            (
                str(i),
                t.mode,
                str(t.conn),
                format_qps(t.qps),
                f"{t.duration:.15g}s",
                t.labels,
                loadcmd.describe_protocol(t.protocol, t.h2),
                loadcmd.planned_url(plan.platform, t.mode, t.protocol, t.size, ingress),
                describe_target(plan.platform, t.mode, ingress, plan.mesh),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = [
        f"plan: {len(plan.tests)} tests on {plan.platform} (mesh {plan.mesh}), run id {plan.run_id}"
    ]
    for r in rows:
        lines.append(
            "  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    n = len(plan.tests)
    lines.append(
        f"estimated time: {format_seconds(plan.estimated_seconds())}"
        f" ({plan.test_seconds:.15g} s of tests + {n} x {plan.per_test_overhead:g} s per-test"
        f" overhead + {plan.start_overhead:g} s start-up)"
    )
    return "\n".join(lines)
