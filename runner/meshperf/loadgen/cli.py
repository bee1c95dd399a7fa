"""loadgen: a drop-in for ``fortio load`` and ``fortio server`` where fortio is not installed.

    python runner/loadgen.py load -c 16 -qps 1000 -t 30s -r 0.0001 -uniform -json out.json URL
    python runner/loadgen.py server -http-port 127.0.0.1:8080
    python -m meshperf.loadgen ...   (the same, with runner/ on PYTHONPATH)

Flags use fortio's single-dash names and meanings (``-flag value`` or ``-flag=value``; a
double dash works too, as with Go's flag package). ``load`` writes a fortio >= 1.38 HTTP
result JSON (``-json FILE``, ``-json -`` for stdout, or ``-a`` for ``<data-dir>/<ID>.json``)
with one extra histogram, ``SendLagHistogram``. All human output goes to stderr.
Ctrl-C / SIGTERM ends a load run early: the result of what ran is still written, and the
exit code is 130. ``server`` answers every path with fortio's echo semantics (size=, status=,
delay=) on 127.0.0.1 unless another address is given explicitly.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from meshperf import cli, echo, fortiojson, limits, loadcmd
from meshperf.argtypes import (
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    workers_count,
)
from meshperf.atomic import write_atomic
from meshperf.cli import print_error
from meshperf.errors import ConfigError, ExitCode, MeshperfError
from meshperf.goduration import parse_duration
from meshperf.histogram import parse_percentiles
from meshperf.loadgen.load import run_load
from meshperf.loadgen.options import VERSION, InterruptedRun, LoadOptions, WarmupError

PROG = "loadgen"
FLAG_RE = re.compile(r"--?[A-Za-z][\w-]*")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

LOAD_BOOL_FLAGS = (
    "uniform",
    "jitter",
    "nocatchup",
    "a",
    "allow-initial-errors",
    "quiet",
    "h2",
    "grpc",
    "ping",
    "keepalive",
    "no-keepalive",
)
# Booleans that default to true: "-flag=false" must reach argparse as "-no-flag".
TRUE_BOOL_FLAGS = ("keepalive",)
SERVER_BOOL_FLAGS: tuple[str, ...] = ()


class OneLineParser(cli.OneLineParser):
    """argparse, but errors are the project's one line ``loadgen: error: ...`` (meshperf.cli)."""


def go_duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def non_negative_duration(text: str) -> int:
    ns = go_duration(text)
    if ns < 0:
        raise argparse.ArgumentTypeError(f"duration must be >= 0, got {text!r}")
    return ns


def connections(text: str) -> int:
    """``-c``: bounded before anything starts (a typo must not open millions of sockets)."""
    n = positive_int(text)
    limits.check_connections([n], "local")
    return n


def load_workers(text: str) -> int:
    """``-workers`` of ``load``: 0 (automatic) or at most ``limits.max_workers()``."""
    return limits.check_workers(non_negative_int(text))


def connection_reuse(text: str) -> tuple[int, int]:
    try:
        return loadcmd.parse_connection_reuse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def percentiles(text: str) -> tuple[float, ...]:
    try:
        return tuple(parse_percentiles(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _flag(group: argparse._ActionsContainer, name: str, **kw: object) -> None:
    """A fortio flag: ``-name`` and ``--name`` (Go's flag package accepts both)."""
    group.add_argument(f"-{name}", f"--{name}", **kw)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  loadgen.py load -c 16 -qps 1000 -t 30s -r 0.0001 -uniform -json out.json "
        "'http://127.0.0.1:8080/echo?size=1024'\n"
        "  loadgen.py load -qps 0 -c 16 -t 10s -json - http://127.0.0.1:8080/\n"
        "  loadgen.py load -h2 -c 16 -qps 1000 -t 30s -json out.json http://127.0.0.1:8080/\n"
        "  loadgen.py load -grpc -ping -s 2 -c 8 -qps 1000 -t 30s -json out.json "
        "127.0.0.1:8079\n"
        "  loadgen.py load -c 16 -qps 1000 -t 30s -json out.json tcp://127.0.0.1:8078\n"
        "  loadgen.py server -http-port 127.0.0.1:8080 -workers 2\n"
        "  loadgen.py server -http-port 8080 -grpc-port 8079 -tcp-port 8078",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    load = sub.add_parser(
        "load",
        help="run a load test (fortio load)",
        allow_abbrev=False,
        description="Run a load test (HTTP/1.1, HTTP/2, gRPC or TCP echo); fortio's flags "
        "and result JSON.",
    )
    g = load.add_argument_group("load shape")
    _flag(
        g,
        "c",
        type=connections,
        default=4,
        metavar="N",
        help="connections (fortio threads), default 4",
    )
    _flag(
        g,
        "qps",
        type=finite_float,
        default=8.0,
        metavar="QPS",
        help="total queries per second across connections; 0 or negative = max (default 8)",
    )
    _flag(
        g,
        "t",
        type=non_negative_duration,
        default=parse_duration("5s"),
        metavar="DUR",
        help="duration (Go syntax: 30s, 1m, 500ms); 0 = until interrupted (default 5s)",
    )
    _flag(
        g,
        "n",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="exactly N calls instead of a duration (no warmup)",
    )
    _flag(g, "uniform", action="store_true", help="stagger connections evenly (qps mode)")
    _flag(g, "jitter", action="store_true", help="+-10%% random jitter on every sleep")
    _flag(
        g,
        "nocatchup",
        action="store_true",
        help="skip missed slots instead of catching up (qps becomes a ceiling)",
    )
    _flag(
        g,
        "workers",
        type=load_workers,
        default=0,
        metavar="N",
        help="worker processes (extension); default: 1 for paced runs up to 4000 qps, "
        "else one per core (never more than connections)",
    )
    g = load.add_argument_group("request")
    _flag(
        g,
        "H",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="extra request header (repeatable)",
    )
    _flag(
        g,
        "payload-size",
        type=non_negative_int,
        default=0,
        metavar="BYTES",
        help="POST this many pseudo-random bytes",
    )
    _flag(
        g,
        "timeout",
        type=go_duration,
        default=parse_duration("3s"),
        metavar="DUR",
        help="per-call connect+response timeout (default 3s)",
    )
    _flag(g, "allow-initial-errors", action="store_true", help="go on when warmup calls fail")
    g = load.add_argument_group("protocols (fortio's flags)")
    _flag(
        g,
        "h2",
        action="store_true",
        help="HTTP/2: h2c prior knowledge on http://, ALPN on https://",
    )
    _flag(g, "grpc", action="store_true", help="gRPC load test (health check; -ping for ping)")
    _flag(
        g, "ping", action="store_true", help="with -grpc: fgrpc.PingServer/Ping instead of health"
    )
    _flag(g, "s", type=positive_int, default=1, metavar="N", help="gRPC streams per connection")
    _flag(g, "healthservice", default="", metavar="NAME", help="service the health check asks for")
    _flag(
        g,
        "grpc-ping-delay",
        type=non_negative_duration,
        default=0,
        metavar="DUR",
        help="with -ping: the delay the server waits before answering",
    )
    _flag(g, "payload", default="", metavar="TEXT", help="payload text (POST for HTTP)")
    _flag(
        g,
        "keepalive",
        action="store_true",
        default=True,
        help="keep connections alive (default true; -keepalive=false: one per call, HTTP/1.1)",
    )
    _flag(g, "no-keepalive", dest="keepalive", action="store_false", help=argparse.SUPPRESS)
    _flag(
        g,
        "connection-reuse",
        type=connection_reuse,
        default=None,
        metavar="MIN:MAX",
        help="replace each connection after a random MIN..MAX calls (HTTP/1.1)",
    )
    _flag(
        g,
        "cacert",
        default="",
        metavar="FILE",
        help="CA certificates (PEM) for https:// and gRPC TLS",
    )
    g = load.add_argument_group("results")
    _flag(
        g,
        "r",
        type=positive_float,
        default=0.001,
        metavar="SECONDS",
        help="histogram resolution (default 0.001)",
    )
    _flag(g, "offset", type=go_duration, default=0, metavar="DUR", help="histogram offset")
    _flag(
        g,
        "p",
        type=percentiles,
        default=(50.0, 75.0, 90.0, 99.0, 99.9),
        metavar="LIST",
        help="percentiles (default 50,75,90,99,99.9)",
    )
    _flag(
        g,
        "labels",
        default=None,
        metavar="TEXT",
        help="result label (default: URL without scheme , hostname)",
    )
    _flag(g, "json", default=None, metavar="FILE", help="write the result JSON here; - = stdout")
    _flag(g, "a", action="store_true", help="auto-save to <data-dir>/<ID>.json")
    _flag(g, "data-dir", default=".", metavar="DIR", help="directory for -a (default .)")
    _flag(g, "runid", type=non_negative_int, default=0, metavar="N", help="RunID in the result")
    _flag(g, "quiet", action="store_true", help="no human output on stderr except errors")
    g = load.add_argument_group("accepted for fortio compatibility")
    _flag(
        g,
        "httpbufferkb",
        type=non_negative_int,
        default=128,
        metavar="KB",
        help="ignored: responses of any size are read whole (Istio's runner passes it)",
    )
    load.add_argument(
        "url", metavar="URL", help="http[s]://host:port/path?query, tcp://host:port, or host:port"
    )

    sub.add_parser("version", help="print the version (fortio version)")
    server = sub.add_parser(
        "server",
        help="run the echo server (fortio server)",
        allow_abbrev=False,
        description="Echo server with fortio's semantics on every path.",
    )
    _flag(
        server,
        "http-port",
        default="8080",
        metavar="[HOST:]PORT",
        help="listen address; a bare port binds 127.0.0.1 (default 8080)",
    )
    _flag(
        server,
        "workers",
        type=workers_count,
        default=1,
        metavar="N",
        help="processes sharing the port with SO_REUSEPORT (default 1)",
    )
    _flag(
        server,
        "tcp-port",
        default="disabled",
        metavar="[HOST:]PORT",
        help="TCP echo server address, or 'disabled' (the default here; fortio's is 8078)",
    )
    _flag(
        server,
        "grpc-port",
        default="disabled",
        metavar="[HOST:]PORT",
        help="gRPC ping + health server address, or 'disabled' (the default here; fortio's is "
        "8079)",
    )
    _flag(
        server,
        "healthservice",
        default="ping",
        metavar="NAME",
        help="health service name reported SERVING (default ping, as fortio)",
    )
    _flag(
        server,
        "max-echo-delay",
        type=non_negative_duration,
        default=echo.DEFAULT_MAX_DELAY_NS,
        metavar="DUR",
        help="cap of each delay= value (default 1.5s)",
    )
    _flag(
        server,
        "maxpayloadsizekb",
        type=non_negative_int,
        default=256,
        metavar="KB",
        help="cap of size= (default 256)",
    )
    return parser


def normalize_bools(argv: Sequence[str]) -> list[str]:
    """Go's flag forms that argparse cannot take as is.

    ``-flag=true|false`` for booleans; and a value that starts with a dash (``-qps -5x``,
    ``-offset -1ms``): Go gives a flag that takes a value the next argument whatever it is,
    argparse would read it as another flag ("expected one argument").
    """
    out: list[str] = []
    bools = set(LOAD_BOOL_FLAGS) | set(SERVER_BOOL_FLAGS)
    pending = list(argv)
    while pending:
        arg = pending.pop(0)
        name = arg.lstrip("-")
        if (
            FLAG_RE.fullmatch(arg)
            and name not in bools
            and name not in ("h", "help")
            and pending
            and pending[0].startswith("-")
        ):
            out.append(f"{arg}={pending.pop(0)}")
            continue
        if arg.startswith("-") and "=" in arg:
            name, _, value = arg.lstrip("-").partition("=")
            if name in bools:
                v = value.lower()
                if v in ("1", "t", "true"):
                    out.append("-" + name)
                    continue
                if v in ("0", "f", "false"):
                    if name in TRUE_BOOL_FLAGS:
                        out.append(f"-no-{name}")
                    continue
        out.append(arg)
    return out


def _write_json(text: str, dest: str, quiet: bool = False) -> None:
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(Path(dest), text)  # a unique temp name, fsync, rename (meshperf.atomic)
    if not quiet:
        print(f"Successfully wrote {len(text)} bytes of Json data to {dest}", file=sys.stderr)


def do_load(args: argparse.Namespace, restore_handlers: bool = True) -> int:
    opts = LoadOptions(
        url=args.url,
        connections=args.c,
        qps=args.qps,
        duration_ns=args.t,
        exactly=args.n,
        resolution=args.r,
        offset_ns=args.offset,
        percentiles=tuple(args.p),
        uniform=args.uniform,
        jitter=args.jitter,
        nocatchup=args.nocatchup,
        labels=args.labels,
        headers=tuple(args.H),
        payload_size=args.payload_size,
        timeout_ns=args.timeout,
        allow_initial_errors=args.allow_initial_errors,
        run_id=args.runid,
        workers=args.workers,
        h2=args.h2,
        grpc=args.grpc,
        ping=args.ping,
        streams=args.s,
        health_service=args.healthservice,
        grpc_ping_delay_ns=args.grpc_ping_delay,
        payload=args.payload,
        keepalive=args.keepalive,
        connection_reuse=args.connection_reuse,
        cacert=args.cacert,
    )
    dest = args.json
    if dest is None and args.a:
        dest = ""  # resolved once the ID is known
    if dest and dest != "-":
        # Checked before the run, so a run is never made only to lose its result.
        parent = Path(dest).parent
        if not parent.is_dir():
            raise ConfigError(f"cannot write -json {dest}: directory {parent} does not exist")
        if Path(dest).is_dir():
            raise ConfigError(f"cannot write -json {dest}: it is a directory")
        try:
            tempfile.TemporaryFile(dir=parent).close()
        except OSError as e:
            raise ConfigError(f"cannot write -json {dest}: {e.strerror or e}") from None
    if args.a and not Path(args.data_dir).is_dir():
        raise ConfigError(f"-data-dir {args.data_dir} is not a directory")
    # run_load handles Ctrl-C/SIGTERM while it runs. One before it listens stops at once
    # (nothing ran). One after it (a second Ctrl-C, or `timeout -s INT` signalling the child and
    # then its group) is only remembered: the result of what ran is still written.
    late: list[int] = []
    started = False

    def mark_started() -> None:
        nonlocal started
        started = True

    def on_stop(signum: int, _frame: object) -> None:
        if not started:
            raise KeyboardInterrupt
        late.append(signum)

    old = {s: signal.signal(s, on_stop) for s in _STOP_SIGNALS}
    try:
        if args.quiet:
            with open(os.devnull, "w") as sink:
                outcome = run_load(opts, log=sink, on_start=mark_started)
        else:
            outcome = run_load(opts, on_start=mark_started)
        text = fortiojson.dumps(outcome.result)
        if dest == "":
            dest = str(Path(args.data_dir) / f"{outcome.result['ID']}.json")
        if dest is not None:
            _write_json(text, dest, args.quiet)
    finally:
        # As a program, the handler stays until exit: a signal arriving while the interpreter
        # shuts down would otherwise kill it (exit status -SIGINT instead of 130). Called as a
        # function, the caller gets its handlers back.
        if restore_handlers or not started:
            for s, h in old.items():
                signal.signal(s, h)
    return ExitCode.INTERRUPTED if outcome.interrupted or late else ExitCode.OK


def do_server(args: argparse.Namespace) -> int:
    host, port = echo.parse_listen(args.http_port)
    tcp = None if args.tcp_port == "disabled" else echo.parse_listen(args.tcp_port, "-tcp-port")
    grpc = None if args.grpc_port == "disabled" else echo.parse_listen(args.grpc_port, "-grpc-port")
    cfg = echo.EchoConfig(
        args.max_echo_delay,
        args.maxpayloadsizekb * 1024,
        tcp=tcp,
        grpc=grpc,
        health_service=args.healthservice,
    )
    echo.serve(host, port, args.workers, cfg, on_listening=echo.print_listening)
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalize_bools(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "load":
            # argv given: called as a function (tests), so signal handlers are given back.
            return do_load(args, restore_handlers=argv is not None)
        if args.command == "version":
            print(VERSION)
            return ExitCode.OK
        return do_server(args)
    except InterruptedRun as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except (WarmupError, ConfigError, MeshperfError) as e:
        print_error(PROG, e)  # meshperf.cli: the one error line of every script
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return ExitCode.ERROR
