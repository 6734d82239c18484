"""Where a report's numbers come from: input file, its SHA-256, options, versions, timing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..digest import sha256_of, size_of


@dataclass
class Provenance:
    """Everything a reader needs to reproduce a report.

    ``options`` holds the extraction and analysis options exactly as used; ``runtime_s`` the
    wall time (seconds) from the start of extraction to the end of the analysis; ``extra``
    free-form facts (e.g. a rewiring method and seed)."""

    source: str
    sha256: str | None = None
    size_bytes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    runtime_s: float | None = None
    graphnn_version: str = __version__
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    )
    python: str = field(default_factory=platform.python_version)
    torch: str = field(default_factory=lambda: _torch_version())
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_path(cls, path: str | os.PathLike, **kwargs) -> "Provenance":
        """Provenance of a checkpoint on disk (hashes it)."""
        p = Path(path)
        return cls(source=str(p), sha256=sha256_of(p), size_bytes=size_of(p), **kwargs)

    def options_text(self) -> str:
        """The options for display: ``key = value`` pairs in a stable order, values as JSON;
        options left at ``None`` are omitted."""
        items = sorted((k, v) for k, v in self.options.items() if v is not None)
        return ", ".join(f"{k} = {json.dumps(v, default=str)}" for k, v in items) or "(defaults)"


def _torch_version() -> str:
    import torch

    return torch.__version__
