"""The one atomic file writer: a reader sees the old file or the whole new one, never half.

Write to a uniquely named temp file beside the target (``mkstemp``: two writers never share
a temp name), ``fsync`` it, then rename over the target, or hard-link it when the target must
not be replaced. The file gets the permissions a plain ``open()`` would give it (0666 minus
the umask), not mkstemp's 0600, so every output of the project follows one policy.
Failures are ``OSError`` (callers turn them into their own error); the temp file never
stays behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, without changing it where Linux can tell (/proc/self/status)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, *, overwrite: bool = True
) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically and durably.

    ``overwrite=False`` refuses an existing target with ``FileExistsError``, without a race
    between the check and the rename (``link`` fails if the target appeared meanwhile).
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise FileExistsError(17, "File exists", str(target))
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise
            except OSError:
                if target.exists():
                    raise FileExistsError(17, "File exists", str(target)) from None
                os.replace(tmp, target)  # filesystems without hard links
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target
