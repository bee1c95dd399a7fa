"""Fortio result files: the model (``meshperf.fortioresult``), the sources they are read from
(``meshperf.sources``), both re-exported here, and writing results and outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshperf import fortiojson
from meshperf.atomic import write_atomic
from meshperf.errors import ResultsError
from meshperf.fortiojson import parse_start_time
from meshperf.fortioresult import (
    GRPC_NUMERIC_OK,
    OK_CODES,
    RESULT_FORMATS,
    RUN_FORMATS,
    FortioResult,
    LabelShape,
    NotAResult,
    ResultBlock,
    RunFile,
    check_format,
    error_count,
    error_percent,
    http_code_ok,
    parse_requested_qps,
)
from meshperf.sources import (
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    FETCH_WORKERS,
    MAX_FILE_BYTES,
    RUN_FILE,
    LoadReport,
    Skipped,
    attach_run_metadata,
    check_url,
    is_collected_rows,
    is_run_metadata,
    is_url,
    load_dir,
    load_file,
    load_files,
    load_source,
    load_sources,
    load_url,
    parse_html_listing,
    parse_index_tsv,
    parse_result,
    read_json,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "FETCH_WORKERS",
    "GRPC_NUMERIC_OK",
    "MAX_FILE_BYTES",
    "OK_CODES",
    "RESULT_FORMATS",
    "RUN_FILE",
    "RUN_FORMATS",
    "FortioResult",
    "LabelShape",
    "LoadReport",
    "NotAResult",
    "ResultBlock",
    "RunFile",
    "Skipped",
    "atomic_write_text",
    "attach_run_metadata",
    "check_format",
    "check_url",
    "error_count",
    "error_percent",
    "http_code_ok",
    "is_collected_rows",
    "is_run_metadata",
    "is_url",
    "load_dir",
    "load_file",
    "load_files",
    "load_source",
    "load_sources",
    "load_url",
    "parse_html_listing",
    "parse_index_tsv",
    "parse_requested_qps",
    "parse_result",
    "parse_start_time",
    "read_json",
    "write_result",
]


# -- writing -----------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    """Write via a temp file in the same directory, then rename; never clobber unless asked.

    ``meshperf.atomic.write_atomic`` does the writing; this names the failure for the CLIs.
    """
    target = Path(path)
    try:
        return write_atomic(target, text, overwrite=overwrite)
    except FileExistsError:
        raise ResultsError(
            f"{target}: already exists", hint="use --overwrite to replace it"
        ) from None
    except OSError as e:
        raise ResultsError(f"{target}: cannot write ({e.strerror or e})") from None


def write_result(
    path: str | os.PathLike[str], result: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Save a result dict the way fortio's CLI does (2-space Go JSON plus newline), atomically."""
    return atomic_write_text(path, fortiojson.dumps(dict(result)), overwrite=overwrite)
