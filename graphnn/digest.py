"""Content digests of checkpoint files and folders, for provenance records."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a checkpoint. For a file: the digest of its bytes (streamed, 1 MiB at a
    time). For a folder (sharded checkpoint): the digest of the lines ``<sha256>  <relative
    path>`` of every regular file below it, in sorted path order, so the value changes when any
    shard, the index, or a file name changes."""
    p = Path(path)
    if p.is_dir():
        lines = []
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            lines.append(f"{_file_sha256(f)}  {f.relative_to(p).as_posix()}\n")
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    return _file_sha256(p)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def size_of(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size
