"""``graphnn sigprop``: signal propagation at initialisation, from the command line.

``MODEL`` is a checkpoint (``.pt/.pth/.bin/.safetensors`` or a model folder: theory from the
weights; the empirical part needs the model itself) or a Python factory ``module.path:name`` /
``path/to/file.py:name`` (an ``nn.Module`` or a function returning one; importing it runs that
code, like any script of yours). ``--module FACTORY`` builds the model for a checkpoint and loads
the checkpoint's weights into it, so the empirical part runs on the checkpoint's weights too;
``--module hf`` builds a Hugging Face folder with ``transformers.AutoModel.from_pretrained``.
Registered on the main app by :func:`register`.
"""


import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

_COLUMNS = ["layer", "param", "activation", "sigma_w2", "sigma_b2", "q_theory", "q_hat", "chi1_theory", "chi1_hat",
            "c_hat", "kurtosis", "chi1_star", "xi_c", "phase", "theory"]
_COMPARE_COLUMNS = ["layer", "param", "sigma_w2_before", "sigma_w2_after", "chi1_hat_before", "chi1_hat_after",
                    "chi1_hat_delta", "q_hat_before", "q_hat_after", "q_hat_delta", "chi1_theory_before",
                    "chi1_theory_after"]


def _is_factory(spec: str) -> bool:
    if Path(spec).exists() or ":" not in spec:
        return False
    head = spec.rsplit(":", 1)[0]
    return head.endswith(".py") or all(part.isidentifier() for part in head.split("."))


def load_factory(spec: str):
    """The ``nn.Module`` named by ``module.path:name`` or ``file.py:name`` (called when it is a
    function or class). Usage errors raise :class:`~graphnn.errors.InvalidParameterError`."""
    from torch import nn

    from .errors import InvalidParameterError

    head, _, attr = spec.rpartition(":")
    try:
        if head.endswith(".py"):
            path = Path(head)
            if not path.is_file():
                raise InvalidParameterError(f"{spec}: no Python file {head}")
            mod_spec = importlib.util.spec_from_file_location(f"_graphnn_factory_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(head)
    except ImportError as e:
        raise InvalidParameterError(f"{spec}: cannot import {head} ({e}); give module.path:name or file.py:name") from e
    obj = getattr(module, attr, None)
    if obj is None:
        raise InvalidParameterError(f"{spec}: {head} has no attribute {attr!r}")
    if not isinstance(obj, nn.Module) and callable(obj):
        obj = obj()
    if not isinstance(obj, nn.Module):
        raise InvalidParameterError(f"{spec} is a {type(obj).__name__}, not a torch.nn.Module (or a function "
                                    "returning one)")
    return obj


def _source(spec: str, factory: str | None, trust: bool) -> tuple[Any, str]:
    """What :func:`graphnn.signal_propagation` gets for ``spec``, and a label."""
    from .errors import CheckpointNotFoundError, InvalidParameterError

    if _is_factory(spec):
        if factory:
            raise InvalidParameterError(f"--module builds the model for a checkpoint; {spec} is already a factory")
        return load_factory(spec), spec
    path = Path(spec)
    if not path.exists():
        raise CheckpointNotFoundError(f"{spec}: no such file or folder (give a checkpoint, or a factory "
                                      "module.path:name / file.py:name)")
    if factory is None:
        return path, spec
    if factory == "hf":
        return _hf_model(path), spec
    from .extract import load_state_dict

    model = load_factory(factory)
    state = load_state_dict(path, trust=trust)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidParameterError(
            f"the checkpoint {spec} does not fit the model of --module {factory}: missing "
            f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model, spec


def _hf_model(path: Path):
    """A Hugging Face model folder built with ``transformers.AutoModel.from_pretrained`` (its own
    loader; no remote code)."""
    from .errors import InvalidParameterError, MissingDependencyError

    if not (path.is_dir() and (path / "config.json").is_file()):
        raise InvalidParameterError(f"--module hf needs a Hugging Face model folder with config.json; {path} is not one")
    try:
        import transformers
    except ImportError as e:
        raise MissingDependencyError("--module hf needs the transformers package: pip install transformers") from e
    return transformers.AutoModel.from_pretrained(str(path), trust_remote_code=False)


def _shape(text: str | None):
    from .errors import InvalidParameterError

    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise InvalidParameterError(f"--input-shape {text!r}: give sizes without the batch axis, e.g. 784 or "
                                    "1,28,28") from None
    return shape


def _device(option: str):
    """``--device``: ``auto`` is CUDA when available (as for the other commands), else the CPU;
    checked by the one device check (:func:`graphnn.validation.check_device`)."""
    from .validation import check_device

    return check_device(option)


def register(app: typer.Typer) -> None:
    """Add the ``sigprop`` command to ``app``."""
    from . import cli
    from .cli import _EXIT_HELP, Device, Exclude, Format, Include, Output, Quiet, Trust, Verbose

    Overwrite = getattr(cli, "Overwrite", Annotated[bool, typer.Option(
        "--overwrite", help="Replace an output file that already exists (never an input).")])

    @app.command(epilog=_EXIT_HELP)
    def sigprop(
        model: Annotated[str, typer.Argument(
            help="A checkpoint (.pt/.safetensors/folder) or a factory module.path:name / file.py:name.",
            metavar="MODEL", show_default=False)],
        compare: Annotated[Optional[str], typer.Option(
            "--compare", metavar="REWIRED", help="A second model (e.g. after rewiring) shown before/after, "
                                                 "aligned by layer.", show_default=False)] = None,
        module: Annotated[Optional[str], typer.Option(
            "--module", metavar="FACTORY", help="Build this model (module.path:name or file.py:name) and load the "
                                                "checkpoint(s) into it, so the empirical part runs on their weights; "
                                                "'hf': a Hugging Face folder built with transformers (no remote "
                                                "code).",
            show_default=False)] = None,
        activation: Annotated[Optional[str], typer.Option(
            "--activation", help="Activation for layers where it cannot be read (every layer of a checkpoint): "
                                 "relu, tanh, gelu, silu, sigmoid, identity, erf, leaky_relu(0.01).",
            show_default=False)] = None,
        input_shape: Annotated[Optional[str], typer.Option(
            "--input-shape", help="Shape of one input without the batch axis, e.g. 1,28,28 (needed for conv "
                                  "nets).", show_default=False)] = None,
        batch: Annotated[int, typer.Option("--batch", help="Gaussian inputs (pairs of correlated inputs).")] = 256,
        probes: Annotated[int, typer.Option("--probes", help="Hutchinson probes per layer.")] = 4,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the inputs and probes.")] = 0,
        no_empirical: Annotated[bool, typer.Option("--no-empirical", help="Theory from the weights only.")] = False,
        table: Annotated[Literal["layers", "pairs", "network"], typer.Option(
            "--table", help="Which table for table/csv output (json has all).")] = "layers",
        report: Annotated[Optional[Path], typer.Option(
            "--report", help="Also write a self-contained HTML report section (figure and tables) to this "
                             "file.", show_default=False)] = None,
        fmt: Format = None,
        output: Output = None,
        include: Include = None,
        exclude: Exclude = None,
        device: Device = "auto",
        trust_checkpoint: Trust = False,
        overwrite: Overwrite = False,
        quiet: Quiet = False,
        verbose: Verbose = 0,
    ) -> None:
        """Signal propagation at initialisation: per layer σ̂_w², σ̂_b² (from the weights), mean-field
        χ₁, ξ_c and the phase (ordered / critical / chaotic), and for a model the empirical q̂, ĉ and
        partial-Jacobian χ̂₁. With --compare, the same before and after (e.g. PA rewiring)."""
        from .cli import _Session, _emit_frame, _resolve_format, log
        from .errors import InvalidParameterError

        s = _Session(quiet, verbose)
        fmt = _resolve_format(fmt, output)
        inputs = [Path(p) for p in (model, compare) if p is not None and Path(p).exists()]
        if report is not None and report.suffix.lower() not in (".html", ".htm"):
            raise typer.BadParameter(f"the report is HTML: give a file name ending in .html, not {report.name!r}",
                                     param_hint="--report")
        outs = [(p, o) for p, o in ((output, "--output"), (report, "--report")) if p is not None]
        if hasattr(cli, "_check_outputs"):
            cli._check_outputs(inputs, [(p, o, "file", None) for p, o in outs], overwrite)
        else:  # the same policy where the shared check is not available
            for p, o in outs:
                if any(p.resolve() == i.resolve() for i in inputs):
                    raise typer.BadParameter(f"{p} is an input of this command", param_hint=o)
                if p.exists() and not overwrite:
                    raise typer.BadParameter(f"{p} exists: pass --overwrite to replace it", param_hint=o)
        emit_options = {"overwrite": overwrite} if "overwrite" in _emit_frame.__code__.co_varnames else {}
        with s.running():
            import graphnn

            try:
                kwargs = dict(input_shape=_shape(input_shape), batch=batch, probes=probes, seed=seed,
                              activation=activation, empirical=not no_empirical,
                              device=_device(device), include=include or None,
                              exclude=exclude or None, trust=trust_checkpoint)
                src, label = _source(model, module, trust_checkpoint)
                res = graphnn.signal_propagation(src, **kwargs)
                other = None
                if compare is not None:
                    src2, label2 = _source(compare, module, trust_checkpoint)
                    other = graphnn.signal_propagation(src2, **kwargs)
            except InvalidParameterError as e:
                raise typer.BadParameter(str(e)) from None
            for note in res.notes + (other.notes if other is not None else []):
                log.info("%s", note)
            net = res.network.iloc[0]
            caption = (f"theory (typical hidden layer, {net['activation'] or 'no known activation'}): "
                       f"chi1 = {net['chi1']:.4g}, xi_c = {net['xi_c']:.4g}, {net['phase']}; empirical: "
                       + (f"chi1_hat = {net['chi1_hat_net']:.4g}, {net['phase_hat']}" if res.empirical
                          else "not run (needs a model: give a factory or --module)"))
            meta = {"command": "sigprop", "source": label, "empirical": res.empirical, "notes": res.notes}
            if report is not None:
                from .atomic import atomic_write
                from .sigprop.report import to_html

                shown = {label: res} if other is None else {f"before: {label}": res, f"after: {label2}": other}
                page = to_html(shown, title=f"graphnn signal propagation: {label}"
                               + ("" if other is None else f" vs {label2}"))
                atomic_write(report, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"),
                             **({"overwrite": overwrite} if "overwrite" in atomic_write.__code__.co_varnames else {}))
                log.info("wrote %s", report)
            s.finish()
            if other is None:
                frames = {"layers": res.layers, "pairs": res.pairs, "network": res.network}
                df = frames[table]
                if fmt == "table" and table == "layers":
                    df = df[[c for c in _COLUMNS if c in df.columns]]
                _emit_frame(df, fmt, output, title=f"{label} (signal propagation)", caption=caption, meta=meta,
                            tables=frames, **emit_options)
                return
            from .sigprop import compare as compare_results

            wide = compare_results(res, other)
            meta.update(compare=label2, empirical_compare=other.empirical, notes_compare=other.notes)
            frames = {"layers": wide, "network_before": res.network, "network_after": other.network}
            shown = wide[[c for c in _COMPARE_COLUMNS if c in wide.columns]] if fmt == "table" else wide
            net2 = other.network.iloc[0]
            caption += (f" | after: theory chi1 = {net2['chi1']:.4g} ({net2['phase']}), empirical "
                        + (f"chi1_hat = {net2['chi1_hat_net']:.4g} ({net2['phase_hat']})" if other.empirical
                           else "not run"))
            _emit_frame(shown, fmt, output, title=f"{label} vs {label2} (signal propagation)", caption=caption,
                        meta=meta, tables=frames, **emit_options)
