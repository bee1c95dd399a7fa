"""The library's exceptions and the CLIs' exit codes.

Library code raises these; only a CLI's ``main`` turns them into a one-line message and an
exit code.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # configuration or input error: nothing (more) was run
    USAGE = 2  # argparse's own code for bad command lines
    TESTS_FAILED = 3  # the run finished but some tests failed or were skipped
    OUTPUT_FAILED = 4  # the output dir refused writes mid-run: stopped, results kept elsewhere
    INTERRUPTED = 130  # Ctrl-C / SIGTERM: what finished is kept


class MeshperfError(Exception):
    """Base of every error the library raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(MeshperfError):
    """Bad flags, bad config file, missing prerequisite (Envoy, perf, a free port)."""


class ClusterError(MeshperfError):
    """Kubernetes API unreachable, pods missing or not ready, exec failed."""


class ResultsError(MeshperfError):
    """A fortio result that cannot be read or makes no sense."""


class PrometheusError(MeshperfError):
    """Prometheus unreachable, or a query that failed."""


class PlatformError(MeshperfError):
    """A local process (Envoy, echo server, load generator) failed to start or died."""


def exit_cli(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())`` for a CLI's ``__main__``; a reader that stops early is no traceback.

    ``runner.py --dry-run | head`` closes stdout before the plan is printed: that is the
    reader's choice, not an error worth a traceback (everything measured is already on disk).
    """
    try:
        code = main()
        sys.stdout.flush()  # inside the try: the flush at exit would fail the same way
    except ModuleNotFoundError as e:  # imported late, e.g. psutil when the platform starts
        if (e.name or "").partition(".")[0] == "meshperf":
            raise
        missing_package(e)
    except BrokenPipeError:
        # Python flushes stdout once more at exit; point it at /dev/null so that is quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = ExitCode.ERROR
    except KeyboardInterrupt:
        # Ctrl-C before a CLI's own handling starts (start-up probes, platform set-up): nothing
        # was measured yet, so one line is all there is to say.
        prog = os.path.basename(sys.argv[0]) or "meshperf"
        print(f"{prog}: interrupted", file=sys.stderr)
        code = ExitCode.INTERRUPTED
    sys.exit(code)


def missing_package(e: ModuleNotFoundError) -> NoReturn:
    """One line for ``python runner/x.py`` run by an interpreter without the project's packages."""
    prog = os.path.basename(sys.argv[0]) or "meshperf"
    print(
        f"{prog}: error: Python package {e.name!r} is not installed for {sys.executable}"
        " (hint: make bootstrap, then .venv/bin/python or pipenv shell)",
        file=sys.stderr,
    )
    sys.exit(ExitCode.ERROR)
