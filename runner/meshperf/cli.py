"""What the four scripts (runner.py, fortio.py, graph.py, loadgen.py) share as command lines.

One error line, ``prog: error: message (hint: ...)``, on stderr; argparse's usage errors in
the same one line instead of its usage block; the exit codes of ``meshperf.errors.ExitCode``
(docs/runner.md, "Exit codes": 2 for a command line argparse refuses, 1 for any other bad
input or configuration, found before anything runs); the interpreter to print in "next:"
lines; the output directory made before a run and removed again if the run never wrote to it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from meshperf.argtypes import positive_float
from meshperf.errors import ConfigError, ExitCode, MeshperfError


def error_line(prog: str, message: object, hint: str | None = None) -> str:
    """``prog: error: message (hint: ...)``: one line, so scripts can grep it."""
    if hint is None and isinstance(message, MeshperfError):
        hint = message.hint
    return f"{prog}: error: {message}" + (f" (hint: {hint})" if hint else "")


def print_error(prog: str, message: object, hint: str | None = None) -> None:
    print(error_line(prog, message, hint), file=sys.stderr)


def fail(
    prog: str, message: object, code: ExitCode = ExitCode.ERROR, hint: str | None = None
) -> int:
    """Print the error line and return the exit code, for ``return fail(...)`` in ``main``."""
    print_error(prog, message, hint)
    return int(code)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are the one error line and exit ``ExitCode.USAGE`` (2)."""

    def error(self, message: str) -> NoReturn:
        # A subcommand's prog is "loadgen load": the error line names the script alone.
        prog = self.prog.split(" ", 1)[0]
        self.exit(int(ExitCode.USAGE), f"{prog}: error: {message} (see --help)\n")


def script_parser(prog: str, description: str | None, epilog: str) -> OneLineParser:
    """The parser each script starts from: one-line usage errors, and its docstring and
    worked examples shown as written (no re-wrapping of the example lines)."""
    return OneLineParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_overwrite(group: argparse._ActionsContainer) -> None:
    """``--overwrite``: without it an existing output file is refused (``check_new_files``)."""
    group.add_argument("--overwrite", action="store_true", help="replace existing output files")


def add_timeout(group: argparse._ActionsContainer, default: float) -> None:
    """``--timeout S``: the bound of each HTTP request a script makes."""
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=default,
        metavar="S",
        help="timeout in seconds for each HTTP request (default: %(default)s)",
    )


def check_new_files(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse, before any work, an output whose directory is missing, or that exists when
    ``--overwrite`` was not given (pyperf's rule: results are never replaced unasked)."""
    for path in paths:
        if not path.parent.is_dir():
            raise ConfigError(f"{path.parent}: output directory does not exist")
        if path.exists() and not overwrite:
            raise ConfigError(f"{path}: already exists", hint="use --overwrite to replace it")


def python_command() -> str:
    """The interpreter running now, as a user would type it here: ``.venv/bin/python`` when
    that is what ran from this checkout (system python may lack pandas or Bokeh)."""
    exe = Path(sys.executable)
    try:
        rel = os.path.relpath(exe)
    except ValueError:  # another drive (Windows)
        rel = str(exe)
    shown = rel if not rel.startswith("..") else str(exe)
    if "/" not in shown:
        shown = f"./{shown}"  # a bare name would be looked up on PATH, another python
    return shlex.quote(shown)


# ---- the output directory -------------------------------------------------------------------


def make_output_dir(path: Path, created: list[Path]) -> None:
    """``mkdir -p path``, appending each directory this call made (outermost first) to
    ``created``: only those may be removed again if the run never gets to write into them."""
    missing: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made by someone else meanwhile: not ours to remove
        created.append(d)
    path.mkdir(parents=True, exist_ok=True)  # a file in the way: FileExistsError as before


def remove_if_empty(created: list[Path]) -> None:
    """Undo ``make_output_dir`` for directories still empty; any file in one keeps it (and so
    its parents): rmdir itself refuses a directory that is not empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def prepare_output_dir(path: Path, created: list[Path]) -> None:
    """Make ``path`` and prove it takes a file, before anything starts: a run whose results
    cannot be written is not worth starting. ConfigError naming the problem otherwise."""
    try:
        make_output_dir(path, created)
    except FileExistsError:
        raise ConfigError(f"output dir {path} exists and is not a directory") from None
    except OSError as e:
        raise ConfigError(f"cannot create output dir {path}: {e.strerror or e}") from None
    try:
        # mkdir passes on a directory that cannot be written to (permissions, read-only mount).
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise ConfigError(f"cannot write to output dir {path}: {e.strerror or e}") from None
