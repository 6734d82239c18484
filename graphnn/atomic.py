"""Atomic outputs: a file or folder appears whole or not at all.

The content is written to a temporary sibling named ``.<name>.graphnn-partial.<pid>.<token>.tmp``
and moved into place when the writer returned. With ``overwrite=False`` the move is *exclusive*:
if the output exists, or another writer publishes it first, the call raises
:class:`~graphnn.errors.RefusedOverwriteError` and leaves the existing output untouched, so of two
concurrent writers exactly one succeeds. A writer killed before the move (``kill -9``, power
loss) leaves its temporary behind; the next write to the same output removes the temporaries of
writers whose process no longer exists (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable

from .errors import RefusedOverwriteError

__all__ = ["atomic_write", "atomic_folder", "remove_stale_partials", "partial_name", "PARTIAL_MARK"]

#: The marker in every temporary name; a file or folder carrying it is never a finished output.
PARTIAL_MARK = ".graphnn-partial."

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def partial_name(path: str | os.PathLike) -> Path:
    """A fresh temporary sibling of ``path`` for this process (not created)."""
    path = Path(path)
    return path.parent / f".{path.name}{PARTIAL_MARK}{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that writers of ``path`` left behind when they died (their pid no
    longer runs); returns what was removed. Temporaries of live processes are kept."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}{PARTIAL_MARK}") + r"(\d+)\.[0-9a-f]+\.tmp$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:  # another writer cleaned it first
            pass
        except OSError:  # read-only folder, permissions: leave it, the write itself will say why
            pass
    return removed


def _refuse_special(path: Path) -> None:
    """Never replace a device, FIFO or socket (``-o /dev/null`` must not swap /dev/null for a file)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        from .errors import InvalidParameterError

        raise InvalidParameterError(f"{path} is not a regular file (a device, FIFO or socket): atomic writes "
                                    "replace files only; give the path of a file")


def _refuse(path: Path) -> RefusedOverwriteError:
    return RefusedOverwriteError(
        f"{path} already exists: graphnn does not replace existing outputs unless asked "
        "(overwrite=True, CLI --overwrite); choose another path or remove it")


@functools.lru_cache(maxsize=1)
def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2``; False where the call is not available (other systems, old libc,
    file systems without support), so the caller falls back. Raises OSError for real failures."""
    fn = _libc_renameat2()
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), ctypes.c_uint(flags))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _fsync(path: Path) -> None:
    """Flush a finished temporary file to disk (a full disk can surface only here)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


def _normal_mode(path: Path, folder: bool) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)  # mkstemp/mkdtemp-like 0600/0700 otherwise


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = True) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path`` and move it into place only
    when it returned: an interrupted or failed write leaves no partial output.

    ``overwrite=True`` (the default, as before) replaces an existing file atomically.
    ``overwrite=False`` publishes exclusively: :class:`~graphnn.errors.RefusedOverwriteError` if
    ``path`` exists beforehand or appears while writing (another writer won); the existing file
    is never touched. Stale temporaries of dead writers of ``path`` are removed first. A device,
    FIFO or socket at ``path`` is never replaced (:class:`~graphnn.errors.InvalidParameterError`).
    """
    path = Path(path)
    _refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    if not overwrite and os.path.lexists(path):
        raise _refuse(path)
    tmp = partial_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        write(str(tmp))
        _normal_mode(tmp, folder=False)
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_file_exclusively(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        _remove(tmp)
        _name_the_output(e, tmp, path)
        raise


def _name_the_output(e: BaseException, tmp: Path, path: Path) -> None:
    """An OS error about the temporary file is reported for the output the user named."""
    if isinstance(e, OSError) and e.filename is not None and os.fspath(e.filename) == str(tmp):
        e.filename = str(path)


def _publish_file_exclusively(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path)  # fails atomically with EEXIST when path exists
    except FileExistsError:
        raise _refuse(path) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        try:  # no hard links on this file system
            if not _renameat2(tmp, path, _RENAME_NOREPLACE):
                _claim_then_replace(tmp, path)
        except FileExistsError:
            raise _refuse(path) from None
        return
    os.unlink(tmp)


def _claim_then_replace(tmp: Path, path: Path) -> None:
    """Last resort where neither hard links nor renameat2 work: create ``path`` exclusively
    (so exactly one writer wins), then move the content over the empty placeholder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.replace(tmp, path)


def atomic_folder(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False) -> None:
    """Call ``write(tmp_dir)`` on a new empty temporary folder beside ``path`` and rename it to
    ``path`` only when it returned: the output folder appears whole or not at all.

    ``overwrite=False`` (the default) publishes exclusively: an existing ``path`` (even an empty
    folder), or one that another writer publishes first, raises
    :class:`~graphnn.errors.RefusedOverwriteError` and is left untouched. ``overwrite=True``
    replaces an existing output (atomically exchanged on Linux; elsewhere the old one is moved
    aside first). Stale temporaries of dead writers of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    if not overwrite and os.path.lexists(path):
        raise _refuse(path)
    tmp = partial_name(path)
    os.mkdir(tmp, 0o700)
    try:
        write(str(tmp))
        _normal_mode(tmp, folder=True)
        if overwrite and os.path.lexists(path):
            _replace_folder(tmp, path)
        else:
            _publish_folder_exclusively(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        _remove(tmp)
        _name_the_output(e, tmp, path)
        raise


def _publish_folder_exclusively(tmp: Path, path: Path) -> None:
    try:
        if _renameat2(tmp, path, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        raise _refuse(path) from None
    # Fallback: claim the name with an exclusive mkdir, then rename over that empty folder
    # (rename replaces an empty directory atomically).
    try:
        os.mkdir(path)
    except FileExistsError:
        raise _refuse(path) from None
    try:
        os.rename(tmp, path)
    except BaseException:
        try:
            os.rmdir(path)
        except OSError:
            pass
        raise


def _replace_folder(tmp: Path, path: Path) -> None:
    try:
        if _renameat2(tmp, path, _RENAME_EXCHANGE):  # tmp now holds the old output
            _remove(tmp)
            return
    except FileNotFoundError:  # the old output vanished meanwhile
        _publish_folder_exclusively(tmp, path)
        return
    old = partial_name(path)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)  # put the old output back
        raise
    _remove(old)
