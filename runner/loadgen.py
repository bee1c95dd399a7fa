"""loadgen: a drop-in for ``fortio load`` and ``fortio server`` where fortio is not installed.

    python runner/loadgen.py load -c 16 -qps 1000 -t 30s -r 0.0001 -uniform -json out.json URL
    python runner/loadgen.py server -http-port 127.0.0.1:8080

The command line lives in ``meshperf.loadgen.cli`` (``python -m meshperf.loadgen`` runs the same);
this file is the user's entry point beside runner.py, fortio.py and graph.py.
"""

from __future__ import annotations

from meshperf.errors import exit_cli
from meshperf.loadgen.cli import (
    LOAD_BOOL_FLAGS,
    SERVER_BOOL_FLAGS,
    build_parser,
    main,
    normalize_bools,
)

__all__ = ["LOAD_BOOL_FLAGS", "SERVER_BOOL_FLAGS", "build_parser", "main", "normalize_bools"]

if __name__ == "__main__":
    exit_cli(main)
