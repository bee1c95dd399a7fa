"""The library's exceptions and the CLIs' exit codes.

Library code raises these; only a CLI's ``main`` turns them into a one-line message and an
exit code.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # configuration or input error: nothing (more) was run
    USAGE = 2  # argparse's own code for bad command lines
    TESTS_FAILED = 3  # the run finished but some tests failed or were skipped
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
