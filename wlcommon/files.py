"""Files written so that no reader ever sees half of one, and secret token files.

Writers go through a temporary file in the destination's folder that is renamed onto the
destination (``os.replace`` is atomic on POSIX): a reader sees the old file or the new one.
A file that is memory-mapped by readers (wasmtime's compiled artifacts) must only ever be
replaced like this, never rewritten in place.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int | None = None, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; when the block succeeds, move it
    onto ``path``; when it fails, delete it. The file gets ``mode``, by default the permissions
    a new file would get (0666 less the umask, not mkstemp's 0600). ``fsync`` flushes the
    data to disk before the rename (for files that must survive a crash, not only a
    concurrent reader)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None,
                 fsync: bool = False) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically (see ``atomic_output``)."""
    path = Path(path)
    with atomic_output(path, mode=mode, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read_token_file(path: str | os.PathLike[str]) -> str | None:
    """The token in ``path``; None when the file is missing, unreadable or empty."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def read_or_create_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path``, or a new random one written there (mode 0600) when the file does
    not exist. Two processes racing to create it agree: only one creation succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise RuntimeError(f"token file {path} is empty; delete it to generate a new token") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (setting it, the only
    portable way to read it, would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
