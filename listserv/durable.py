"""Crash-safe files: what is written here is either wholly on disk or not there at all.

The protocol every durable write follows (the spool, the store, the digest backlog):
write a temporary file, fsync it, rename it into place, fsync the directory -- a rename is
atomic, and a directory entry a power cut forgets loses the file with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from pathlib import Path


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` so that `path` holds either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def make_directories(path: Path, mode: int = 0o700) -> None:
    """Like mkdir -p, and each new directory's entry is fsynced into its parent: a job
    renamed into a folder that a power cut forgets is lost with it."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue  # made by another process, which syncs it
        fsync_directory(folder.parent)


def write_synced(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) holding `data`, fsynced before this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchange(first: Path, second: Path) -> bool:
    """Swap two names in one step (Linux renameat2 RENAME_EXCHANGE); False where the C library
    or the filesystem cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_directory(new: Path, target: Path) -> Path | None:
    """Put the directory `new` (a sibling of `target`) at `target`; where the old tree is now,
    for the caller to delete, or None when there was none. A reader of `target` sees the old
    tree or the new, never a mix: the two are exchanged in one step where the kernel can, else
    the old one is renamed away and the new one in (a moment with neither)."""
    if not os.path.lexists(target):
        os.rename(new, target)
        fsync_directory(target.parent)
        return None
    if _exchange(new, target):
        old = new
    else:
        old = new.with_name(f"{new.name}.old")
        os.rename(target, old)
        try:
            os.rename(new, target)
        except OSError:
            os.rename(old, target)
            raise
    fsync_directory(target.parent)
    return old
