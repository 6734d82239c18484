"""The ``graphnn`` command line (also ``python -m graphnn``).

Data (tables, written paths) goes to stdout; logs, warnings and progress go to stderr. A rich
progress bar appears only when stderr is a terminal. Exit codes are listed in ``EXIT_CODES``
and in ``graphnn --help``.

Outputs (``-o``, ``--report``, ``rewire``'s checkpoint, the demo's folder) follow one policy: an
output is never one of the command's inputs (by path, symlink or hard link, nor a file of an input
folder), an existing output is replaced only with ``--overwrite``, and every output is written
atomically (a temporary file moved into place; exclusively without ``--overwrite``, so of two
concurrent runs to one output exactly one succeeds).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, Optional

import typer

from ._version import __version__
from .errors import (
    CheckpointNotFoundError,
    GraphnnError,
    InvalidParameterError,
    NothingMappableError,
    RefusedOverwriteError,
    UnsafeCheckpointError,
)

#: Exit status -> meaning (documented in ``--help`` and the README).
EXIT_CODES = {
    0: "success",
    1: "runtime failure (corrupt or unreadable checkpoint, failed analysis, full disk, read-only or "
       "unwritable output folder, ...)",
    2: "usage error (bad option or argument, checkpoint path that does not exist, an output that is "
       "an input, an existing output without --overwrite, checkpoints of unrelated models to compare)",
    3: "unsafe checkpoint refused: a pickle that weights_only=True will not load; rerun with "
       "--trust-checkpoint only for files you trust",
    4: "nothing mappable: no parameter of the checkpoint could become a graph block",
    130: "interrupted (Ctrl-C; 143 for SIGTERM): no partial output is left",
    141: "stdout was closed early (e.g. piped into head): stops quietly",
}
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNSAFE, EXIT_NOTHING = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_PIPE, EXIT_TERMINATED = 130, 141, 143

_OUTPUT_POLICY = ("Outputs: never an input of the command; an existing output is replaced only with "
                  "--overwrite; written atomically (whole or not at all).")
_EXIT_HELP = (_OUTPUT_POLICY + "\n\nExit codes:\n\n\b\n"
              + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items()))
_SCHEMA_VERSION = 2  # the JSON outputs' layout (docs/json.md); 2: analyse's notes, partitions, roles, spectral (added keys keep it)

log = logging.getLogger("graphnn.cli")

app = typer.Typer(
    name="graphnn",
    help="Read neural-network weights as layered weighted graphs: describe a checkpoint, analyse "
         "strength, eigenvector centrality and k-hypercores, write an HTML report, compare "
         "checkpoints, rewire weights.",
    epilog=_EXIT_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# -- shared options ------------------------------------------------------------------------------
Checkpoint = Annotated[Path, typer.Argument(
    help="Checkpoint: a .pt/.pth/.bin or .safetensors file, or a folder of shards with an index.",
    metavar="CKPT", show_default=False)]
Include = Annotated[Optional[list[str]], typer.Option(
    "--include", "--layers", metavar="GLOB",
    help="Only parameters whose name matches this glob (repeatable; --layers is the same option).")]
Exclude = Annotated[Optional[list[str]], typer.Option(
    "--exclude", metavar="GLOB", help="Skip parameters whose name matches this glob (repeatable).")]
Conv = Annotated[Literal["l2", "l1", "sum"], typer.Option(
    "--conv", help="Conv kernel slice -> one channel edge: l2 norm, l1 norm or signed sum.")]
Device = Annotated[str, typer.Option(
    "--device", metavar="auto|cpu|cuda[:i]", help="Where the work runs (docs/gpu.md): auto uses CUDA when available.")]
Trust = Annotated[bool, typer.Option(
    "--trust-checkpoint",
    help="Allow a full unpickle of a .pt/.bin file that weights_only=True refuses. That runs code "
         "stored in the file: only for files from a source you trust.")]
Embeddings = Annotated[bool, typer.Option(
    "--include-embeddings", help="Map embedding tables as (d x vocab) blocks (skipped by default).")]
Format = Annotated[Optional[Literal["table", "csv", "json"]], typer.Option(
    "--format", "-f", help="Output format; default: from the -o suffix (.csv, .json), else table.")]
Output = Annotated[Optional[Path], typer.Option(
    "--output", "-o", help="Write the data to this file instead of stdout.", show_default=False)]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace outputs that already exist (never an input). Without it, an existing "
                        "output is refused (exit 2).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors on stderr.")]
Base = Annotated[Optional[Path], typer.Option(
    "--base", metavar="BASE", show_default=False,
    help="CKPT is a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors): analyse its "
         "weight change scale*B*A on the topology of this base model (a model folder or checkpoint file; "
         "--include/--exclude/--conv apply to it). See docs/deltas.md.")]
NullCopies = Annotated[Optional[int], typer.Option(
    "--null", metavar="K", show_default=False,
    help="Compare each layer's metrics with K null copies of the weights (z-score and empirical p; "
         "analyse: --table null and the json; report: a section). See docs/null-models.md.")]
NullKind = Annotated[Literal["shuffle", "rewire"], typer.Option(
    "--null-kind", help="shuffle: entries permuted within each tensor; rewire: permuted keeping "
                        "every neuron's strength (nearly) and sign counts.")]
NullSeed = Annotated[Optional[int], typer.Option(
    "--seed", show_default=False,
    help="Seed of the --null draws (same seed, same table); without it one is drawn and logged.")]
Spectral = Annotated[Optional[bool], typer.Option(
    "--spectral/--no-spectral", show_default=False,
    help="Spectral norm, stable rank and Frobenius norm of every block (blocks table). Default: on up to "
         "1e8 edges (a few dozen extra passes over each large block), off above.")]
WeightWatcher = Annotated[bool, typer.Option(
    "--weightwatcher", help="Add WeightWatcher's power-law alpha per layer (ww_alpha, blocks table; needs "
                            "graphnn[weightwatcher]).")]
Verbose = Annotated[int, typer.Option(
    "--verbose", "-v", count=True, show_default=False, help="More detail on stderr (timings, every step).")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"graphnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
    """graphnn: neural-network weights as layered weighted graphs."""


# -- signals: Ctrl-C, SIGTERM, a closed stdout ---------------------------------------------------------
class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temporary files) runs; exit 143."""


_interrupt_reported = False


def _report_interrupt() -> None:
    global _interrupt_reported
    if not _interrupt_reported:
        _interrupt_reported = True
        try:
            os.write(2, b"graphnn: interrupted\n")
        except OSError:
            pass


def _on_signal(signum, frame) -> None:
    """First signal: one line, then unwind (cleaning temporary outputs); a second one exits now."""
    if _interrupt_reported:
        os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)
    _report_interrupt()
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _install_signal_handlers() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that the final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def _os_error_text(e: OSError) -> str:
    """What happened and what to do, for the OS errors users meet (full disk, permissions)."""
    where = f": {e.filename}" if getattr(e, "filename", None) else ""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"no space left on the device{where}; free some space or write the output elsewhere "
                "(nothing was written)")
    if e.errno == errno.EROFS:
        return f"read-only file system{where}; write the output to a writable folder"
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"permission denied{where}; check that the output folder is writable and the input "
                "readable")
    return str(e)


# -- session: logging, progress, errors ------------------------------------------------------------
class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"graphnn: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"graphnn: warning: {msg}"
        return f"graphnn: {msg}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, so lines logged while a
    rich progress bar is live go through rich's redirection and do not tear the bar."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Session:
    """Logging to stderr, warnings routed through it, a progress callback, and the mapping of
    errors to exit codes. One per command invocation."""

    def __init__(self, quiet: bool, verbose: int):
        if quiet and verbose:
            raise typer.BadParameter("--quiet and --verbose contradict each other: choose one")
        self.quiet, self.verbose = quiet, verbose
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
        root = logging.getLogger("graphnn")
        for h in list(root.handlers):
            if getattr(h, "_graphnn_cli", False):
                root.removeHandler(h)
        handler = _StderrHandler()
        handler._graphnn_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False
        self._progress = None
        self._tasks: dict[str, Any] = {}

    def _showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        log.warning("%s (%s)", message, category.__name__)

    @contextlib.contextmanager
    def running(self) -> Iterator["_Session"]:
        """Run a command body: warnings go to the log, errors become exit codes."""
        old = warnings.showwarning
        warnings.showwarning = self._showwarning
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = self._showwarning
                try:
                    yield self
                finally:
                    self._stop_progress()
        except typer.Exit:
            raise
        except (typer.BadParameter, typer.Abort):
            raise
        except KeyboardInterrupt as e:
            _report_interrupt()
            raise typer.Exit(EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(EXIT_PIPE)
        except BaseException as e:  # noqa: BLE001 - every failure must become a non-zero exit
            raise typer.Exit(self._report_error(e))
        finally:
            warnings.showwarning = old
        log.debug("done in %.2f s", time.perf_counter() - self.t0)

    def _report_error(self, e: BaseException) -> int:
        if isinstance(e, UnsafeCheckpointError):
            code = EXIT_UNSAFE
        elif isinstance(e, NothingMappableError):
            code = EXIT_NOTHING
        elif isinstance(e, (CheckpointNotFoundError, RefusedOverwriteError, InvalidParameterError)):
            code = EXIT_USAGE
        else:
            code = EXIT_FAILURE
        if isinstance(e, GraphnnError):
            log.error("%s", e)
        elif isinstance(e, (MemoryError,)):
            log.error("out of memory (%s): try --include/--exclude to analyse fewer layers", e)
        elif isinstance(e, OSError):
            log.error("%s", _os_error_text(e))
        elif isinstance(e, ValueError):
            log.error("%s", e)
        else:
            log.error("unexpected %s: %s (rerun with -v for the traceback and please report it)",
                      type(e).__name__, e)
        if self.verbose:
            import traceback

            sys.stderr.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        return code

    # progress: a rich bar on a terminal, otherwise step lines at -v
    def progress(self, step: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self.tty:
            if done >= total:
                log.debug("%s: %d/%d (%.1f s)", step, done, total, time.perf_counter() - self.t0)
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description:<14}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        from .eta import StepEta, format_eta

        if step not in self._tasks:
            self._tasks[step] = (self._progress.add_task(step, total=max(total, 1), eta=""), StepEta())
        task, eta = self._tasks[step]
        self._progress.update(task, completed=done, total=max(total, 1), eta=format_eta(eta.update(done, total)))

    def finish(self) -> None:
        """Stop the progress bar before the command's final lines."""
        self._stop_progress()

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks = {}


# -- output helpers --------------------------------------------------------------------------------
def _resolve_format(fmt: str | None, output: Path | None) -> str:
    if fmt:
        return fmt
    if output is not None and output.suffix.lower() in (".csv", ".json"):
        return output.suffix.lower()[1:]
    return "table"


def _clean(value: Any) -> Any:
    """JSON-safe scalar: numpy types to Python, NaN/Inf/NA to None."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _records(df) -> list[dict]:
    return [{str(k): _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def _fmt_cell(v: Any) -> str:
    from .html_summary import fmt

    return fmt(v)


def _table_text(df, title: str | None = None, caption: str | None = None) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    import pandas as pd

    for c in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        t.add_column(str(c), justify="right" if numeric else "left", overflow="fold")
    for row in df.itertuples(index=False):
        t.add_row(*(_fmt_cell(v) for v in row))
    buf = io.StringIO()
    tty = sys.stdout.isatty()
    Console(file=buf, width=(None if tty else 100_000), force_terminal=False, color_system=None,
            soft_wrap=False, highlight=False).print(t)
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines()]
    return "\n".join(lines) + "\n"


def _emit(text: str, output: Path | None, overwrite: bool = False) -> None:
    """Write data to ``output`` (atomically; an existing file only with ``overwrite``) or stdout."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .atomic import atomic_write

    atomic_write(output, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)
    log.info("wrote %s", output)


def _emit_frame(df, fmt: str, output: Path | None, *, title: str | None = None, caption: str | None = None,
                meta: dict | None = None, tables: dict | None = None, overwrite: bool = False) -> None:
    if fmt == "csv":
        _emit(df.to_csv(index=False), output, overwrite)
    elif fmt == "json":
        doc = {"schema_version": _SCHEMA_VERSION, "graphnn_version": __version__, **(meta or {})}
        for name, frame in (tables or {"rows": df}).items():
            doc[name] = _records(frame)
        _emit(json.dumps(_clean(doc), indent=1) + "\n", output, overwrite)
    else:
        _emit(_table_text(df, title=title, caption=caption), output, overwrite)


def _extract_kwargs(include, exclude, conv, trust, embeddings) -> dict:
    """The keyword arguments of :func:`graphnn.extract` (from :mod:`graphnn.extract.options`, not
    the report package: its plotting libraries would cost ``describe`` about 2 s)."""
    from .extract.options import extract_options

    return extract_options(include, exclude, conv, trust, embeddings)


def _check_device(device: str) -> str:
    """``--device`` checked by :func:`graphnn.validation.check_device` (a usage error, exit 2)."""
    from .validation import check_device

    try:
        check_device(device, name="--device")
    except InvalidParameterError as e:
        raise typer.BadParameter(str(e), param_hint="--device") from None
    return device


def _check_gamma(value: float) -> float:
    from .validation import check_number

    try:
        return float(check_number("--gamma", value, nonnegative=True))
    except InvalidParameterError as e:
        raise typer.BadParameter(str(e)) from None


_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_TABLE_SUFFIXES = {"csv": ".csv", "json": ".json", "table": ".txt"}


def _check_outputs(inputs, outputs, overwrite: bool) -> None:
    """The output policy (module docstring) as usage errors: ``outputs`` holds ``(path, option,
    kind, example)`` tuples (``None`` paths are skipped; ``example`` is offered when refused)."""
    from .validation import check_output

    seen: dict[str, str] = {}
    for path, option, kind, example in outputs:
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise typer.BadParameter(f"{path} is also given to {seen[key]}: give each output its own path",
                                     param_hint=option)
        seen[key] = option
        try:
            check_output(path, inputs, overwrite=overwrite, kind=kind, name="output",
                         overwrite_hint="--overwrite")
        except (InvalidParameterError, RefusedOverwriteError) as e:
            hint = f" (e.g. {example})" if example and os.path.realpath(example) != key else ""
            raise typer.BadParameter(f"{e}{hint}", param_hint=option) from None


def _check_table_output(ckpt: Path, fmt_option: str | None, fmt: str, output: Path | None) -> None:
    """A data table (csv, json, text) never goes to a checkpoint-like name, and an explicit
    --format agrees with a .csv/.json suffix."""
    if output is None:
        return
    suffix = output.suffix.lower()
    example = ckpt.with_name(_stem(ckpt) + _TABLE_SUFFIXES[fmt]).name
    if suffix in _CHECKPOINT_SUFFIXES:
        raise typer.BadParameter(f"{output.name!r} is a checkpoint name, but this command writes a {fmt} table: "
                                 f"give a .csv, .json or .txt name, e.g. {example}", param_hint="--output")
    if fmt_option and suffix in (".csv", ".json") and suffix != _TABLE_SUFFIXES[fmt]:
        raise typer.BadParameter(f"--format {fmt} disagrees with the name {output.name!r}: give a name ending "
                                 f"in {_TABLE_SUFFIXES[fmt]} or drop --format", param_hint="--output")


# -- commands --------------------------------------------------------------------------------------
@app.command(epilog=_EXIT_HELP)
def describe(
    ckpt: Checkpoint,
    fmt: Format = None,
    output: Output = None,
    include: Include = None,
    exclude: Exclude = None,
    conv: Conv = "l2",
    include_embeddings: Embeddings = False,
    trust_checkpoint: Trust = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Fast layer table of a checkpoint: every parameter's shape, dtype, and whether it is mapped
    to a graph block or skipped (and why). Reads names and shapes only, no tensor data."""
    s = _Session(quiet, verbose)
    fmt_option, fmt = fmt, _resolve_format(fmt, output)
    _check_table_output(ckpt, fmt_option, fmt, output)
    _check_outputs([ckpt], [(output, "--output", "file", None)], overwrite)
    with s.running():
        import graphnn

        g = graphnn.extract(ckpt, **_extract_kwargs(include, exclude, conv, trust_checkpoint, include_embeddings))

        import pandas as pd

        from .analyses.roles import partition_roles, with_roles

        cov = with_roles(g.coverage, "name")
        cols = ["name", "shape", "dtype", "numel", "status", "kind", "reason", "blocks", "layer_index", "role"]
        summary = (f"{len(cov)} parameters, {int((cov['status'] == 'mapped').sum())} mapped "
                   f"({100 * g.coverage_fraction:.1f} % of entries); {len(g.partitions)} layers, "
                   f"{len(g.blocks)} blocks, {g.num_nodes:,} neurons, {g.num_edges:,} edges; "
                   f"topology: {getattr(g, 'topology', None) or 'unknown'}")
        parts = with_roles(pd.DataFrame(_partition_records(g), columns=["layer", "size", "kind", "members"]), "layer",
                           partition_roles(g))
        blocks = pd.DataFrame([{"block": b.name, "param": b.param, "src": b.src, "dst": b.dst, "n_dst": b.n_dst,
                                "n_src": b.n_src, "edges": b.num_edges, "kind": b.kind,
                                "aggregation": b.aggregation, "groups": b.groups} for b in g.blocks.values()],
                              columns=["block", "param", "src", "dst", "n_dst", "n_src", "edges", "kind",
                                       "aggregation", "groups"])
        blocks = with_roles(blocks, "block")
        _emit_frame(
            cov[cols], fmt, output, title=str(ckpt), caption=summary,
            meta={"command": "describe", "source": str(ckpt), "coverage_fraction": g.coverage_fraction,
                  "num_nodes": g.num_nodes, "num_edges": g.num_edges, "notes": list(g.notes),
                  "topology": getattr(g, "topology", None)},
            tables={"parameters": cov, "partitions": parts, "blocks": blocks}, overwrite=overwrite,
        )
        _log_notes(g)
        if fmt != "table":
            log.info("%s", summary)


def _partition_records(g) -> list[dict]:
    """One record per partition: ``layer`` (its name), ``size``, ``kind``, ``members`` (the
    names merged into it), as ``describe`` and ``analyse`` write them."""
    return [{"layer": p.name, "size": p.size, "kind": p.kind, "members": list(p.members)}
            for p in g.partitions.values()]


def _graph_meta(g) -> dict:
    """What ``analyse``'s JSON says about the graph (docs/json.md): sizes, topology, the
    extraction notes and the partitions with their members."""
    return {"num_nodes": g.num_nodes, "num_edges": g.num_edges, "topology": getattr(g, "topology", None),
            "notes": list(g.notes), "partitions": _partition_records(g)}


_LAYER_TABLE_COLUMNS = ("layer", "kind", "size", "strength_mean", "strength_std", "strength_var",
                        "abs_strength_mean", "centrality_mean", "centrality_max", "core_max")


def _check_null_options(null: int | None, kind: str, seed: int | None, table: str | None,
                        dask: str | None) -> dict:
    """The analyse options of ``--null K --null-kind --seed`` (empty without ``--null``); bad values
    are usage errors."""
    if null is None:
        if table == "null":
            raise typer.BadParameter("--table null shows the null-model baseline: add --null K (e.g. --null 99)",
                                     param_hint="--table")
        return {}
    from .analyses.null_model import check_null

    try:
        check_null(null, kind, seed)
    except InvalidParameterError as e:
        if str(e).startswith("n "):
            raise typer.BadParameter(f"--null K is the number of null copies: a positive integer (e.g. 99), not "
                                     f"{null}", param_hint="--null") from None
        raise typer.BadParameter(str(e), param_hint="--seed") from None
    if dask is not None:
        raise typer.BadParameter("--null runs on one process only in this version: drop --dask to compute it",
                                 param_hint="--null")
    return {"null": null, "null_kind": kind, "seed": seed}


def _log_null_seed(a, analyse_options: dict | None) -> None:
    """Log the null model's copies and seed (the drawn one too, so that the run can be repeated)."""
    null = getattr(a, "null", None)
    if null is None:
        return
    entropy = null.attrs.get("seed_entropy")
    log.info("null model: %d %s copies, seed %s%s", int(null["n"].iloc[0]) if len(null) else 0,
             (analyse_options or {}).get("null_kind"), entropy,
             "" if (analyse_options or {}).get("seed") is not None else f" (pass --seed {entropy} to repeat)")


def _run_analysis(s: _Session, ckpt: Path, ex: dict, device: str, dask: str | None = None,
                  analyse_options: dict | None = None):
    from .report.pipeline import analyse_file

    _check_device(device)
    if dask is None:
        res = analyse_file(ckpt, extract=ex, device=device, progress=s.progress, analyse_options=analyse_options)
        _log_null_seed(res.analysis, analyse_options)
    else:  # the analyses on a Dask cluster (graphnn.distributed)
        from .distributed import close, connect

        log.info("connecting to Dask (%s)", dask)
        client = connect(dask)
        try:
            res = analyse_file(ckpt, extract=ex, device=device, progress=s.progress,
                               analyse_options={**(analyse_options or {}), "client": client})
        finally:
            close(client)
    log.info("analysed %s: %d layers, %s edges, coverage %.1f %% (%.2f s)", ckpt, len(res.analysis.layers),
             f"{res.graph.num_edges:,}", 100 * res.graph.coverage_fraction, res.provenance.runtime_s)
    _log_notes(res.graph)
    return res


@app.command(epilog=_EXIT_HELP)
def analyse(
    ckpt: Checkpoint,
    fmt: Format = None,
    output: Output = None,
    table: Annotated[Optional[Literal["layers", "neurons", "blocks", "null", "all"]], typer.Option(
        "--table", help="Which table: layers (one row per layer), neurons, blocks (one row per weight "
                        "tensor), null (the --null baseline) or all (json only). Default: layers; all for "
                        "json.")] = None,
    include: Include = None,
    exclude: Exclude = None,
    conv: Conv = "l2",
    device: Device = "auto",
    include_embeddings: Embeddings = False,
    trust_checkpoint: Trust = False,
    overwrite: Overwrite = False,
    base: Base = None,
    null: NullCopies = None,
    null_kind: NullKind = "shuffle",
    seed: NullSeed = None,
    dask: Annotated[Optional[str], typer.Option(
        "--dask", metavar="local:N|tcp://HOST:PORT",
        help="Run the analyses on Dask: local:N starts N local workers, tcp://HOST:PORT uses a running "
             "scheduler (needs graphnn[dask]; see docs/distributed.md).")] = None,
    spectral: Spectral = None,
    weightwatcher: WeightWatcher = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Strength, strength variance, eigenvector centrality and k-hypercores of a checkpoint, as
    per-layer, per-neuron or per-tensor tables (table, csv or json). With --base, CKPT is a LoRA
    adapter and the graph is its weight change on the base model."""
    _check_adapter_args(ckpt, base)
    if dask is not None and base is not None:
        raise typer.BadParameter("--dask does not run adapter analyses (--base) in this version: drop one",
                                 param_hint="--dask")
    if dask is not None:
        from .distributed import parse_address

        try:
            parse_address(dask)
        except InvalidParameterError as e:
            raise typer.BadParameter(str(e), param_hint="--dask") from None
    null_options = _check_null_options(null, null_kind, seed, table, dask)
    s = _Session(quiet, verbose)
    fmt_option, fmt = fmt, _resolve_format(fmt, output)
    table = table or ("all" if fmt == "json" else "layers")
    if table == "all" and fmt != "json":
        raise typer.BadParameter("csv and table output hold one table: choose --table layers, neurons, "
                                 "blocks or null, or use --format json for all of them", param_hint="--table")
    _check_table_output(ckpt, fmt_option, fmt, output)
    _check_outputs([ckpt] + ([base] if base is not None else []), [(output, "--output", "file", None)], overwrite)
    _check_device(device)
    with s.running():
        ex = _extract_kwargs(include, exclude, conv, trust_checkpoint, include_embeddings)
        options = {**null_options, "spectral": "auto" if spectral is None else spectral,
                   "weightwatcher": weightwatcher}
        res = (_run_adapter_analysis(s, ckpt, base, ex, device, options) if base is not None
               else _run_analysis(s, ckpt, ex, device, dask, options))
        a = res.analysis
        s.finish()
        frames = {"layers": a.layers, "neurons": a.neurons, "blocks": a.blocks}
        if getattr(a, "null", None) is not None:
            frames["null"] = a.null
        elif table == "null":
            raise InvalidParameterError("--table null: no null model was computed for this input (it needs "
                                        "--null K)")
        meta = {"command": "analyse", "source": str(ckpt), "sha256": res.provenance.sha256,
                "options": res.provenance.options, "coverage_fraction": res.graph.coverage_fraction,
                **_graph_meta(res.graph),
                "centrality_info": dict(getattr(a, "centrality_info", None) or {}),
                "runtime_s": res.provenance.runtime_s}
        if "null" in frames:
            meta["null_seed_entropy"] = str(a.null.attrs.get("seed_entropy"))
        if base is not None:
            meta.update(base=str(base), delta=res.graph.meta.get("delta"))
        if fmt == "json":
            chosen = frames if table == "all" else {table: frames[table]}
            _emit_frame(a.layers, fmt, output, meta=meta, tables=chosen, overwrite=overwrite)
            return
        df = frames[table]
        if fmt == "table" and table == "layers":
            shown = [c for c in _LAYER_TABLE_COLUMNS if c in df.columns]
            if len(shown) < len(df.columns):
                log.info("showing %d of %d columns; --format csv or json has all", len(shown), len(df.columns))
            df = df[shown]
        _emit_frame(df, fmt, output, title=f"{ckpt} ({table})", overwrite=overwrite)


app.command("analyze", hidden=True, epilog=_EXIT_HELP, help="Alias of 'analyse'.")(analyse)


@app.command(epilog=_EXIT_HELP)
def report(
    ckpt: Checkpoint,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="HTML file to write [default: <checkpoint name>.report.html here].",
        show_default=False)] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Title of the report.")] = None,
    include: Include = None,
    exclude: Exclude = None,
    conv: Conv = "l2",
    device: Device = "auto",
    include_embeddings: Embeddings = False,
    trust_checkpoint: Trust = False,
    overwrite: Overwrite = False,
    base: Base = None,
    null: NullCopies = None,
    null_kind: NullKind = "shuffle",
    seed: NullSeed = None,
    spectral: Spectral = None,
    weightwatcher: WeightWatcher = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Write a self-contained HTML report of a checkpoint (provenance, per-layer table, figures,
    coverage); prints the report's path on stdout. With --base, CKPT is a LoRA adapter and the
    report is of its weight change on the base model."""
    _check_adapter_args(ckpt, base)
    null_options = _check_null_options(null, null_kind, seed, None, None)
    s = _Session(quiet, verbose)
    out = output or Path(f"{_stem(ckpt)}.report.html")
    _check_html_path(out)
    _check_outputs([ckpt] + ([base] if base is not None else []),
                   [(out, "--output", "file", f"{_stem(ckpt)}.report.html")], overwrite)
    _check_device(device)
    with s.running():
        from .report.html import render_report, write_html

        ex = _extract_kwargs(include, exclude, conv, trust_checkpoint, include_embeddings)
        options = {**null_options, "spectral": "auto" if spectral is None else spectral,
                   "weightwatcher": weightwatcher}
        res = (_run_adapter_analysis(s, ckpt, base, ex, device, options) if base is not None
               else _run_analysis(s, ckpt, ex, device, analyse_options=options))
        s.progress("report", 0, 1)
        t = time.perf_counter()
        write_html(render_report(res.analysis, res.provenance, res.graph, title=title), out, overwrite=overwrite)
        s.progress("report", 1, 1)
        s.finish()
        log.info("wrote %s (%.0f kB, figures %.2f s)", out, out.stat().st_size / 1e3, time.perf_counter() - t)
        typer.echo(str(out))


@app.command(epilog=_EXIT_HELP)
def compare(
    ckpts: Annotated[list[Path], typer.Argument(
        help="Two or more checkpoints (e.g. epochs of one training run), compared in this order.",
        metavar="CKPT...", show_default=False)],
    fmt: Format = None,
    output: Output = None,
    report_path: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write an HTML comparison report to this file.", show_default=False)] = None,
    labels: Annotated[Optional[list[str]], typer.Option(
        "--label", help="Label of each checkpoint, in order (repeatable); default: file names.")] = None,
    metrics: Annotated[Optional[list[str]], typer.Option(
        "--metric", help="Per-layer metric to compare (repeatable), e.g. strength_var; default: "
                         "strength_mean, strength_var, centrality_mean, core_max.")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Title of the HTML report.")] = None,
    include: Include = None,
    exclude: Exclude = None,
    conv: Conv = "l2",
    device: Device = "auto",
    include_embeddings: Embeddings = False,
    trust_checkpoint: Trust = False,
    overwrite: Overwrite = False,
    delta: Annotated[bool, typer.Option(
        "--delta", help="Two checkpoints BASE TUNED: analyse the graph of the weight change W_tuned - W_base "
                        "(blocks matched by name) and give per-block ||dW||_F / ||W_base||_F (json: also the "
                        "per-layer, per-block and per-neuron tables of the change). See docs/deltas.md.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Per-layer metrics of several checkpoints side by side, aligned by layer name, with the
    change from the first to the last (table, csv or json; optionally an HTML report).
    Checkpoints of unrelated models (no layer name in common besides input, or layers of one name
    but different sizes) are refused (exit 2). With --delta: the graph of W_tuned - W_base."""
    s = _Session(quiet, verbose)
    fmt_option, fmt = fmt, _resolve_format(fmt, output)
    if len(ckpts) < 2:
        raise typer.BadParameter("compare needs at least two checkpoints", param_hint="CKPT...")
    if delta and len(ckpts) != 2:
        raise typer.BadParameter(f"--delta takes exactly two checkpoints, BASE and TUNED (got {len(ckpts)})",
                                 param_hint="CKPT...")
    if delta and metrics:
        raise typer.BadParameter("--metric chooses columns of the side-by-side table; --delta gives the change's own "
                                 "analysis: drop one", param_hint="--metric")
    if labels and len(labels) != len(ckpts):
        raise typer.BadParameter(f"{len(labels)} labels for {len(ckpts)} checkpoints: give one --label per "
                                 "checkpoint", param_hint="--label")
    if report_path is not None:
        _check_html_path(report_path, "--report")
    if ckpts:
        _check_table_output(ckpts[0], fmt_option, fmt, output)
    _check_outputs(ckpts, [(output, "--output", "file", None), (report_path, "--report", "file", None)], overwrite)
    _check_device(device)
    with s.running():
        from .report.compare import available_metrics, compare_layers
        from .report.pipeline import checkpoint_labels, write_comparison

        names = list(labels) if labels else checkpoint_labels(ckpts)
        if len(set(names)) != len(names):
            raise typer.BadParameter(f"labels must be unique, got {names}", param_hint="--label")
        ex = _extract_kwargs(include, exclude, conv, trust_checkpoint, include_embeddings)
        if delta:
            _compare_delta(s, ckpts, names, ex, device, fmt, output, report_path, title, overwrite)
            return
        results = {lab: _run_analysis(s, p, ex, device) for lab, p in zip(names, ckpts)}
        analyses = {k: r.analysis for k, r in results.items()}
        wanted = available_metrics(analyses, metrics) if metrics else None
        if metrics:
            missing = sorted(set(metrics) - set(wanted))
            if missing:
                cols = sorted(set.intersection(*(set(a.layers.columns) for a in analyses.values())))
                raise typer.BadParameter(f"unknown metric(s) {missing}; per-layer columns are: {', '.join(cols)}",
                                         param_hint="--metric")
        wide = compare_layers(analyses, wanted)
        _warn_partial_layers(analyses)
        s.finish()
        _emit_frame(wide, fmt, output, title=" vs ".join(names),
                    meta={"command": "compare", "checkpoints": [{"label": k, "source": str(r.path),
                                                                  "sha256": r.provenance.sha256}
                                                                 for k, r in results.items()]},
                    tables={"layers": wide}, overwrite=overwrite)
        if report_path is not None:
            write_comparison(results, report_path, title=title, overwrite=overwrite)
            if output is None:  # stdout holds the table: keep it clean, say where the report went on stderr
                log.info("wrote %s", report_path)
            else:
                typer.echo(str(report_path))


@app.command(epilog=_EXIT_HELP)
def rewire(
    ckpt: Checkpoint,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Where to write: for a checkpoint file, a file of the same format, with a JSON "
                               "provenance record beside it (<output>.provenance.json); for a model folder, a "
                               "new folder with the same shards, index, config.json and other files (ready for "
                               "from_pretrained) and graphnn.provenance.json inside. Written atomically: it "
                               "appears complete or not at all.", show_default=False)],
    method: Annotated[Literal["pa", "variance-search", "hcore"], typer.Option(
        "--method", "-m", help="pa: preferential-attachment rewiring (Scabini et al.); variance-search: "
                               "the lowest-strength-variance of --trials redraws; hcore: hypercore-guided "
                               "re-initialisation.")] = "pa",
    seed: Annotated[Optional[int], typer.Option(
        "--seed", min=0, help="Random seed; without it one is drawn, and either way it is recorded in the "
                              "provenance file.", show_default=False)] = None,
    mode: Annotated[Literal["faithful", "fast"], typer.Option(
        "--mode", help="PA rewiring: faithful (the authors' numpy sampler) or fast (batched, same "
                       "distribution).")] = "faithful",
    trials: Annotated[int, typer.Option("--trials", min=1, help="variance-search: number of redraws.")] = 100,
    gamma: Annotated[float, typer.Option("--gamma", callback=_check_gamma, help="hcore: strength of the hypercore "
                                         "bias, a finite number >= 0 (0 = plain initialiser).")] = 1.0,
    init: Annotated[str, typer.Option(
        "--init", metavar="NAME", help="variance-search and hcore: the base initialiser, 'match' (a normal draw "
                                       "with each tensor's own mean and std: keeps the scale of trained or "
                                       "non-Kaiming checkpoints) or a torch.nn.init name (kaiming_normal, "
                                       "xavier_uniform, orthogonal, trunc_normal, ...).")] = "match",
    include: Include = None,
    exclude: Exclude = None,
    include_embeddings: Embeddings = False,
    report_path: Annotated[Optional[Path], typer.Option(
        "--report", help="Also write a before/after HTML report to this file.", show_default=False)] = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    trust_checkpoint: Trust = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """Re-initialise a checkpoint's weights (PA rewiring, variance search or hypercore-guided) and
    write a new checkpoint plus a JSON provenance record; prints the written paths on stdout. A
    model folder (sharded safetensors or .bin with an index) becomes a new folder with the same
    layout. The weights changed are those describe reports as mapped (embeddings only with
    --include-embeddings); a tied LM head and embedding are rewired once and stay tied."""
    s = _Session(quiet, verbose)
    if report_path is not None:
        _check_html_path(report_path, "--report")
    if method in ("variance-search", "hcore"):
        from .rewire.inits import check_init

        try:
            check_init(init)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--init") from None
    if method == "hcore" and (include or exclude or include_embeddings):
        raise typer.BadParameter("--method hcore redraws every weight of the graph; drop --include/--exclude/"
                                 "--include-embeddings", param_hint="--include/--exclude")
    if method == "pa" and mode == "faithful" and device not in ("auto", "cpu"):
        raise typer.BadParameter("--mode faithful runs numpy on the CPU; use --mode fast to rewire on a GPU",
                                 param_hint="--device")
    _check_device(device)
    _check_rewire_outputs(ckpt, output, report_path, overwrite)
    with s.running():
        from .rewire import rewire_checkpoint

        t = time.perf_counter()
        s.progress("rewire", 0, 1)
        kwargs: dict[str, Any] = {"method": method, "seed": seed, "device": device, "trust": trust_checkpoint,
                                  "overwrite": overwrite}
        if method == "pa":
            kwargs["mode"] = mode
        if method == "variance-search":
            kwargs["trials"] = trials
        if method == "hcore":
            kwargs["gamma"] = gamma
        if method in ("variance-search", "hcore"):
            kwargs["init"] = init
        if include:
            kwargs["include"] = list(include)
        if exclude:
            kwargs["exclude"] = list(exclude)
        if include_embeddings:
            kwargs["include_embeddings"] = True
        record = rewire_checkpoint(ckpt, output, progress=s.progress, **kwargs)
        s.progress("rewire", 1, 1)
        s.finish()
        used_seed = record.get("seed", seed) if isinstance(record, dict) else seed
        log.info("rewired %s -> %s with %s, seed %s (%.2f s)", ckpt, output, method, used_seed,
                 time.perf_counter() - t)
        typer.echo(str(output))
        prov = Path(record["output"].get("provenance") or str(output) + ".provenance.json")
        if prov.exists():
            typer.echo(str(prov))
        if report_path is not None:
            from .report.pipeline import analyse_file, extract_options, write_comparison

            ex = extract_options(trust=trust_checkpoint)
            before = analyse_file(ckpt, extract=ex, device=device, progress=s.progress)
            after = analyse_file(output, extract=ex, device=device, progress=s.progress)
            extra = [("method", method), ("seed", str(used_seed))]
            if isinstance(record, dict) and record.get("options"):
                extra.append(("rewiring options", json.dumps(_clean(record["options"]), sort_keys=True)))
            if prov.exists():
                extra.append(("provenance record", str(prov)))
            write_comparison({"before": before, "after": after}, report_path, mode="rewire", extra=extra,
                             overwrite=overwrite, sections=_sigprop_sections(ckpt, output, trust_checkpoint),
                             title=f"graphnn rewiring report: {method} on {ckpt.name}")
            s.finish()
            log.info("wrote %s", report_path)
            typer.echo(str(report_path))


@app.command(epilog=_EXIT_HELP)
def demo(
    out_dir: Annotated[Path, typer.Option(
        "--out-dir", "-o", help="Folder for the demo checkpoints and reports.")] = Path("graphnn-demo"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights and data order.")] = 0,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=200, help="Training epochs.")] = 12,
    device: Device = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    verbose: Verbose = 0,
) -> None:
    """The main job on a built-in example: train a small CNN for a few seconds on the digits data
    set bundled with scikit-learn (no download), save its initial and trained checkpoints, and
    write the report of the trained one plus an init-vs-trained comparison; prints the report
    paths (the main report first). An earlier demo in the same folder is replaced only with
    --overwrite."""
    s = _Session(quiet, verbose)
    _check_device(device)
    _check_outputs([], [(out_dir / name, "--out-dir", "file", None) for name in DEMO_OUTPUTS], overwrite)
    with s.running():
        from .demo import run_demo

        res = run_demo(out_dir, seed=seed, epochs=epochs, device=device, progress=s.progress, log=log.info)
        s.finish()
        typer.echo(str(res.report))
        typer.echo(str(res.compare_report))


# -- small helpers ---------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".safetensors", ".pth", ".pt", ".bin"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or "checkpoint"


def _check_html_path(path: Path, option: str = "--output") -> None:
    if path.exists() and path.is_dir():
        raise typer.BadParameter(f"{path} is a folder: give the report's file name, e.g. {path / 'report.html'}",
                                 param_hint=option)
    if path.suffix.lower() not in (".html", ".htm"):
        example = path.with_name((path.stem or "report") + ".html")
        raise typer.BadParameter(f"the report is HTML: give a file name ending in .html (e.g. {example}), "
                                 f"not {path.name!r}", param_hint=option)


#: What ``graphnn demo`` writes into its folder (see :func:`graphnn.demo.run_demo`).
DEMO_OUTPUTS = ("demo-init.safetensors", "demo-trained.safetensors", "report.html", "compare.html")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _check_adapter_args(ckpt: Path, base: Path | None) -> None:
    """A PEFT adapter folder needs --base (its weights are a change of another model's)."""
    if base is not None:
        return
    from .extract.lora import CONFIG_FILE, is_adapter

    if is_adapter(ckpt):
        named = ""
        try:
            named = json.loads(((ckpt if ckpt.is_dir() else ckpt.parent) / CONFIG_FILE).read_text()).get(
                "base_model_name_or_path") or ""
        except (OSError, ValueError, AttributeError):
            pass
        raise typer.BadParameter(
            f"{ckpt} is a PEFT adapter ({CONFIG_FILE}): its weights change another model's; give that model with "
            f"--base BASE (a model folder or checkpoint file{'; the config names ' + repr(named) if named else ''})",
            param_hint="--base")


def _run_adapter_analysis(s: _Session, adapter: Path, base: Path, ex: dict, device: str,
                          analyse_options: dict | None = None):
    """A LoRA adapter on its base model: the ΔW graph (graphnn.lora_delta), analysed
    (``analyse_options``: more keyword arguments of :func:`graphnn.analyse`, e.g. null)."""
    import graphnn

    from .digest import sha256_of
    from .report.pipeline import Analysed, provenance_options
    from .report.provenance import Provenance

    _check_device(device)
    t0 = time.perf_counter()
    ex = dict(ex)
    trust = ex.pop("trust", False)
    s.progress("extract", 0, 1)
    g = graphnn.lora_delta(adapter, base, trust=trust, **ex)
    s.progress("extract", 1, 1)
    a = graphnn.analyse(g, device=device, progress=s.progress, **dict(analyse_options or {}))
    _log_null_seed(a, analyse_options)
    options = {k: v for k, v in provenance_options(ex, device, a, base=str(base), trust=trust or None).items()
               if v is not None}
    prov = Provenance.for_path(adapter, options=options, runtime_s=time.perf_counter() - t0,
                               extra={"base": str(base), "base_sha256": sha256_of(base)})
    log.info("analysed adapter %s on %s: %d blocks changed, %s edges (%.2f s)", adapter, base, len(g.blocks),
             f"{g.num_edges:,}", prov.runtime_s)
    _log_notes(g)
    return Analysed(Path(adapter), g, a, prov)


_DELTA_LAYER_COLUMNS = ("layer", "size", "strength_mean", "strength_std", "abs_strength_mean", "centrality_max",
                        "core_max")


def _compare_delta(s: _Session, ckpts: list[Path], names: list[str], ex: dict, device: str, fmt: str,
                   output: Path | None, report_path: Path | None, title: str | None, overwrite: bool) -> None:
    """``compare BASE TUNED --delta``: the ΔW graph's per-block norms and analysis."""
    import graphnn

    from .digest import sha256_of
    from .report.pipeline import provenance_options
    from .report.provenance import Provenance

    t0 = time.perf_counter()
    s.progress("extract", 0, 2)
    gb = graphnn.extract(ckpts[0], **ex)
    s.progress("extract", 1, 2)
    gt = graphnn.extract(ckpts[1], **ex)
    s.progress("extract", 2, 2)
    g = graphnn.delta(gb, gt, labels=(names[0], names[1]))
    from .analyses.roles import with_roles

    norms = with_roles(graphnn.delta_norms(g), "block")  # every table ends with layer_index and role
    a = graphnn.analyse(g, device=device, progress=s.progress)
    _log_notes(g)
    if g.meta.get("all_zero"):
        log.warning("%s and %s have equal weights in every matched block: the change is zero", names[1], names[0])
    s.finish()
    sources = [{"label": lab, "source": str(p), "sha256": sha256_of(p)} for lab, p in zip(names, ckpts)]
    meta = {"command": "compare", "delta": True, "base": sources[0], "tuned": sources[1],
            "all_zero": g.meta.get("all_zero"), "only_in_base": g.meta["delta"]["only_in_base"],
            "only_in_tuned": g.meta["delta"]["only_in_tuned"], "notes": list(g.notes),
            "centrality_info": dict(getattr(a, "centrality_info", None) or {})}
    heading = f"{names[1]} - {names[0]}"
    if fmt == "json":
        _emit_frame(norms, fmt, output, meta=meta, overwrite=overwrite,
                    tables={"norms": norms, "layers": a.layers, "blocks": a.blocks, "neurons": a.neurons})
    elif fmt == "csv":
        _emit_frame(norms, fmt, output, overwrite=overwrite)
        log.info("the csv holds the per-block norms; --format json also has the change's layer, block and neuron "
                 "tables")
    else:
        layers = a.layers[[c for c in _DELTA_LAYER_COLUMNS if c in a.layers.columns]]
        _emit(_table_text(norms, title=f"weight change {heading}: per block (Frobenius norms)")
              + "\n" + _table_text(layers, title=f"graph of the change {heading}: per layer"), output, overwrite)
    if report_path is not None:
        from .report.html import render_report, write_html

        prov = Provenance(source=f"{ckpts[1]} - {ckpts[0]}", sha256=sources[1]["sha256"],
                          options=provenance_options(ex, device),
                          runtime_s=time.perf_counter() - t0, extra={"base": str(ckpts[0]),
                                                                      "base_sha256": sources[0]["sha256"]})
        write_html(render_report(a, prov, g, title=title or f"Weight change {heading}"), report_path,
                   overwrite=overwrite)
        if output is None:
            log.info("wrote %s", report_path)
        else:
            typer.echo(str(report_path))


def _log_notes(g) -> None:
    """The graph's notes on stderr: informational (the TopologyWarnings among them were already
    shown as warnings when they were raised)."""
    for n in g.notes:
        log.info("note: %s", n)


def _sigprop_sections(before: Path, after: Path, trust: bool) -> list[dict]:
    """The rewire report's signal-propagation card: σ̂_w² (and the theory where the activation is
    known) of the checkpoint before and after; none, with a log line, where it cannot be had."""
    try:
        from .sigprop import signal_propagation
        from .sigprop.report import comparison_section

        sp = [signal_propagation(p, empirical=False, trust=trust) for p in (before, after)]
        return [comparison_section(*sp)]
    except Exception as e:  # noqa: BLE001 - the report stays useful without this card
        log.warning("signal propagation left out of the report: %s", e)
        return []


def _check_rewire_outputs(ckpt: Path, output: Path, report_path: Path | None, overwrite: bool) -> None:
    """rewire writes the input's format: a file of the same kind (plus its provenance JSON), or a
    folder for a model folder. Refusals offer a name that passes these very checks."""
    if ckpt.is_dir():
        example = ckpt.with_name(ckpt.name + "-rewired")
        _check_outputs([ckpt], [(output, "--output", "folder", example), (report_path, "--report", "file", None)],
                       overwrite)
        return
    st = ckpt.suffix.lower() == ".safetensors"
    allowed = (".safetensors",) if st else _PICKLE_SUFFIXES
    keep = ckpt.suffix if ckpt.suffix.lower() in allowed else allowed[0]
    example = ckpt.with_name(f"{_stem(ckpt)}.rewired{keep}")
    if output.suffix.lower() not in allowed:
        raise typer.BadParameter(
            f"the input is a {'safetensors' if st else 'pickle'} checkpoint and the output keeps its format: "
            f"give a name ending in {' or '.join(allowed)} (e.g. {example}), not {output.name!r}",
            param_hint="--output")
    provenance = Path(str(output) + ".provenance.json")
    _check_outputs([ckpt], [(output, "--output", "file", example), (provenance, "--output", "file", None),
                            (report_path, "--report", "file", None)], overwrite)


def _warn_partial_layers(analyses) -> None:
    """Say which layers only some checkpoints have (they are NaN in the others)."""
    names = {k: set(a.layers["layer"].astype(str)) for k, a in analyses.items()}
    common = set.intersection(*names.values())
    for label, mine in names.items():
        only = sorted(mine - common)
        if only:
            log.warning("%d layer(s) of %s are missing from another checkpoint (NaN there): %s", len(only), label,
                        ", ".join(only[:8]) + (", ..." if len(only) > 8 else ""))


from .cli_sigprop import register as _register_sigprop  # noqa: E402  (graphnn sigprop)
_register_sigprop(app)


def _click_saw_a_closed_stdout() -> bool:
    """Whether click stopped on a broken pipe outside a command body (``--help``, ``--version``,
    a usage message): it then wraps the streams in its ``PacifyFlushWrapper`` (typer's vendored
    click or click itself) and exits 1."""
    return type(sys.stdout).__name__ in ("PacifyFlushWrapper", "_PacifyFlushWrapper")


def _asks_for_help(args: list[str]) -> bool:
    """``--help``/``-h``/``--version`` anywhere, or no arguments (help is shown): a reader that
    stops early (``graphnn --help | head -1``) got what it asked for, so the exit status is 0."""
    return not args or any(a in ("--help", "-h", "--version") for a in args)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``graphnn``; ``python -m graphnn``): Ctrl-C and SIGTERM end
    with one line and exit 130/143, a closed stdout quietly with 141 (0 for ``--help`` and
    ``--version``: ``graphnn --help | head -1``)."""
    _install_signal_handlers()
    try:
        app(args=argv, prog_name="graphnn")
    except SystemExit:
        if _click_saw_a_closed_stdout():
            _silence_stdout()
            args = sys.argv[1:] if argv is None else list(argv)
            raise SystemExit(EXIT_OK if _asks_for_help(args) else EXIT_PIPE) from None
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            raise SystemExit(EXIT_PIPE) from None
        raise
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(EXIT_PIPE) from None


if __name__ == "__main__":  # pragma: no cover
    main()
