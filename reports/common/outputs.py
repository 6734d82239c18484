"""Study outputs are written whole or not at all: each file is first written to a temporary
file beside it (``.<name>.*.partial``) and moved over the target with ``os.replace`` only once
complete, so an interrupted run (Ctrl-C, full disk, a crash) never leaves a truncated CSV,
README or figure in place of the previous one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary path in ``path``'s folder, then move it to
    ``path``; on any failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """``df.to_csv(path, index=False)``, atomically."""
    return replace_atomically(path, lambda tmp: df.to_csv(tmp, index=False))


def write_text(path: Path, text: str) -> Path:
    """``path.write_text(text, encoding="utf-8")``, atomically."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
