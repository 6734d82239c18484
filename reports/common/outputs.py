"""Study outputs are written whole or not at all, through graphnn's own
:func:`graphnn.atomic.atomic_write`: each file is first written to a temporary file beside it and
moved over the target only once complete, so an interrupted run (Ctrl-C, full disk, a crash) never
leaves a truncated CSV, README or figure in place of the previous one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

import graphnn
from graphnn.atomic import atomic_write


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path in ``path``'s folder, then move it to ``path``;
    on any failure the temporary file is removed and ``path`` is left as it was."""
    atomic_write(path, lambda tmp: write(Path(tmp)), overwrite=True)
    return Path(path)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """``df.to_csv(path, index=False)``, atomically."""
    return replace_atomically(path, lambda tmp: df.to_csv(tmp, index=False))


def write_text(path: Path, text: str) -> Path:
    """``path.write_text(text, encoding="utf-8")``, atomically."""
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_meta(out: Path, *, quick: bool, workers: int, start: float) -> Path:
    """``meta.csv`` of a run: quick or full, workers, wall seconds since ``start``
    (``time.perf_counter()``), torch and graphnn versions."""
    meta = pd.DataFrame([{"quick": quick, "workers": workers, "wall_seconds": round(time.perf_counter() - start, 1),
                          "torch": torch.__version__, "graphnn": graphnn.__version__}])
    return write_csv(meta, Path(out) / "meta.csv")
