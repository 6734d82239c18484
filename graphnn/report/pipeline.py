"""Checkpoint file -> graph -> analysis -> HTML: the steps the CLI, the demo and the benchmark
share. (The analyses themselves know nothing of files; this module is where files come in.)"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InvalidParameterError
from ..extract.options import extract_options  # noqa: F401  (re-exported: callers import it from here)
from .html import render_comparison, render_report, write_html
from .provenance import Provenance

Progress = Callable[[str, int, int], None]


@dataclass
class Analysed:
    """One checkpoint analysed: the graph, the analysis and where they came from."""

    path: Path
    graph: Any
    analysis: Any
    provenance: Provenance


def provenance_options(extract: Mapping[str, Any], device: str, analysis: Any = None, **extra: Any) -> dict[str, Any]:
    """The options a provenance records: the extract options that are set, the device, ``extra``
    (those that are not ``None``), and the analysis's own options as ``analyse.<name>``."""
    options = {k: v for k, v in extract.items() if v not in (None, False)}
    options["device"] = device
    options.update({k: v for k, v in extra.items() if v is not None})
    options.update({f"analyse.{k}": v for k, v in (getattr(analysis, "options", None) or {}).items()
                    if k not in ("device", "progress")})
    return options


def analyse_file(
    path: str | os.PathLike,
    *,
    extract: Mapping[str, Any] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    analyse_options: Mapping[str, Any] | None = None,
) -> Analysed:
    """Extract ``path`` (names and shapes only), analyse it and hash it. ``extract`` holds
    :func:`graphnn.extract` options (see :func:`extract_options`); ``runtime_s`` in the
    provenance covers extraction and analysis."""
    import graphnn

    ex = dict(extract or extract_options())
    t0 = time.perf_counter()
    if progress:
        progress("extract", 0, 1)
    g = graphnn.extract(path, **ex)
    if progress:
        progress("extract", 1, 1)
    a = graphnn.analyse(g, device=device, progress=progress, **dict(analyse_options or {}))
    runtime = time.perf_counter() - t0
    prov = Provenance.for_path(path, options=provenance_options(ex, device, a), runtime_s=runtime)
    return Analysed(Path(path), g, a, prov)


def report_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    title: str | None = None,
    extract: Mapping[str, Any] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    overwrite: bool = True,
    analyse_options: Mapping[str, Any] | None = None,
    delta_norms: Any = None,
) -> Analysed:
    """Write the HTML report of one checkpoint to ``out`` (atomically; ``overwrite=False``
    refuses an existing ``out``, see :func:`write_html`). ``analyse_options`` go to
    :func:`graphnn.analyse` (e.g. ``{"null": 99, "seed": 0}`` adds the null-model section);
    ``delta_norms`` (a :func:`graphnn.delta_norms` frame) adds the ΔW section."""
    res = analyse_file(path, extract=extract, device=device, progress=progress, analyse_options=analyse_options)
    if progress:
        progress("report", 0, 1)
    write_html(render_report(res.analysis, res.provenance, res.graph, title=title, delta_norms=delta_norms),
               out, overwrite=overwrite)
    if progress:
        progress("report", 1, 1)
    return res


_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def checkpoint_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique labels for checkpoints: the file names without a checkpoint suffix, with
    as many parent folders as needed to tell them apart (the suffix stays when only it
    differs)."""
    ps = [Path(p) for p in paths]

    def strip(name: str) -> str:
        return next((name[: -len(s)] for s in _CHECKPOINT_SUFFIXES if name.endswith(s) and len(name) > len(s)), name)

    for keep_suffix in (False, True):
        for depth in range(1, max(len(p.parts) for p in ps) + 1):
            labels = ["/".join(p.parts[-depth:]) for p in ps]
            if not keep_suffix:
                labels = [strip(lab) for lab in labels]
            if len(set(labels)) == len(labels):
                return labels
    return [f"{i}:{p}" for i, p in enumerate(ps)]


def compare_files(
    paths: Sequence[str | os.PathLike],
    *,
    labels: Sequence[str] | None = None,
    extract: Mapping[str, Any] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Analysed]:
    """Analyse several checkpoints with the same options: ``{label: Analysed}`` in order."""
    labels = list(labels) if labels else checkpoint_labels(paths)
    if len(labels) != len(paths):
        raise InvalidParameterError(f"{len(labels)} labels for {len(paths)} checkpoints: give one label per checkpoint")
    if len(set(labels)) != len(labels):
        raise InvalidParameterError(f"labels must be unique, got {labels}")
    return {lab: analyse_file(p, extract=extract, device=device, progress=progress)
            for lab, p in zip(labels, paths)}


def write_comparison(results: Mapping[str, Analysed], out: str | os.PathLike, *, title: str | None = None,
                     mode: str = "compare", extra: Sequence[tuple[str, str]] = (), overwrite: bool = True,
                     sections: Sequence[Mapping] = ()) -> Path:
    """Write the comparison (or before/after rewiring) report of analysed checkpoints
    (atomically; ``overwrite=False`` refuses an existing ``out``, see :func:`write_html`)."""
    html = render_comparison(
        {k: r.analysis for k, r in results.items()},
        {k: r.provenance for k, r in results.items()},
        {k: r.graph for k, r in results.items()},
        title=title, mode=mode, extra=extra, sections=sections,
    )
    return write_html(html, out, overwrite=overwrite)
