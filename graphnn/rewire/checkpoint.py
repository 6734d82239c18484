"""Re-initialise the weights of a checkpoint file and write a new one with a provenance record.

``rewire_checkpoint(in_path, out_path, method=...)`` reads the checkpoint with graphnn's safe
loader, applies one re-initialiser, writes ``out_path`` in the same format (safetensors stays
safetensors, a pickle ``.pt/.pth/.bin/.ckpt`` stays a pickle) and ``<out_path>.provenance.json``
beside it. Both files appear together or not at all: they are written to temporary files in the
output folder and moved into place with ``os.replace`` only when both are complete. The input is
never written to (an output that is the input, by path or by inode, is refused). Everything that
is not rewired is kept: a pickle's wrapper dict (epoch, optimizer state, ...), its key prefixes
and non-tensor entries, and a safetensors file's metadata.

A bare checkpoint has no module, so the weights are chosen by name and shape (the rules of
:func:`graphnn.extract` for state_dicts): Linear-like 2-D ``*weight`` tensors, 3-5-D conv
kernels and GPT-2 ``Conv1D`` weights (stored ``(in, out)``, seen as ``(out, in)``). Embedding tables
and fused ``in_proj_weight`` tensors are left alone unless an ``include`` glob names them; biases,
norm parameters and buffers are never touched. A ConvTranspose kernel cannot be told from a conv
kernel by its shape: it is flattened by its stored first axis.

Methods: ``"pa"`` (:func:`pa_rewire_`, per tensor), ``"variance-search"``
(:func:`min_strength_variance_search_`: the initialiser is called on a tensor of the stored shape,
so ``fan_in = shape[1] * prod(shape[2:])`` by ``torch.nn.init``'s rule; the checkpoint's values are
discarded, so use it on initialisation checkpoints) and ``"hcore"`` (:func:`hcore_reinit_` on the
graph extracted from the state_dict; every mapped weight, including attention projections, is
redrawn).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..digest import sha256_of
from ..errors import RefusedOverwriteError
from ..analyses.strength import tensor_strength_variance
from ._targets import WeightTarget, _as_patterns, _matches
from .hcore_init import SCOPES, _check_gamma, _core_vectors, compute_cores, endpoint_products, hcore_graph, reinit_tensors_
from .pa import _check_seed, rewire_targets_
from .variance_search import search_targets_

METHODS = ("pa", "variance-search", "hcore")
PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_SCHEMA = "graphnn.rewire.provenance/1"

_SAFETENSORS = (".safetensors",)
_PICKLE = (".pt", ".pth", ".bin", ".ckpt")
_DEFAULT_KINDS = ("linear", "conv", "hf_conv1d")


def _format_of_file(path: Path) -> str | None:
    if path.suffix in _SAFETENSORS:
        return "safetensors"
    if path.suffix in _PICKLE:
        return "pickle"
    return None


def _format_of_input(path: Path) -> str:
    if path.is_dir():
        return "safetensors" if any(p.suffix in _SAFETENSORS for p in path.iterdir()) else "pickle"
    fmt = _format_of_file(path)
    return fmt or "pickle"


def _sha256(path: Path) -> tuple[str, int]:
    return sha256_of(path), path.stat().st_size


def _describe_input(path: Path) -> dict:
    if path.is_dir():
        files = []
        for p in sorted(path.iterdir()):
            if p.is_file() and (p.suffix in _SAFETENSORS + _PICKLE or p.name.endswith(".index.json")):
                digest, size = _sha256(p)
                files.append({"name": p.name, "sha256": digest, "bytes": size})
        return {"path": str(path), "files": files}
    digest, size = _sha256(path)
    return {"path": str(path), "sha256": digest, "bytes": size}


def _check_paths(in_path: Path, out_path: Path, overwrite: bool) -> str:
    """Refuse writing onto the input; check formats. Returns the format to write."""
    if not in_path.exists():
        from ..errors import CheckpointNotFoundError

        raise CheckpointNotFoundError(f"{in_path} does not exist: pass the path of a checkpoint file or model folder")
    same = os.path.abspath(in_path) == os.path.abspath(out_path)
    if not same and out_path.exists():
        try:
            same = os.path.samefile(in_path, out_path)
        except OSError:  # pragma: no cover - races, permissions
            same = False
    if not same and in_path.is_dir() and out_path.exists():
        same = out_path.resolve().parent == in_path.resolve()  # a file of the input folder
    if same:
        raise RefusedOverwriteError(
            f"{out_path} is the input checkpoint {in_path}: rewire_checkpoint never overwrites its input; "
            "choose another out_path (e.g. model.rewired.safetensors)"
        )
    if out_path.is_dir():
        raise RefusedOverwriteError(f"{out_path} is a folder: pass a file path (e.g. {out_path / 'model.safetensors'})")
    for existing in (out_path, Path(str(out_path) + PROVENANCE_SUFFIX)):
        if existing.exists() and not overwrite:
            raise RefusedOverwriteError(
                f"{existing} already exists: pass overwrite=True to replace it, or choose another path")
    want = _format_of_input(in_path)
    got = _format_of_file(out_path)
    suffixes = _SAFETENSORS if want == "safetensors" else _PICKLE
    if got != want:
        raise ValueError(
            f"the input is a {want} checkpoint, so the output is written in the same format: give out_path "
            f"a suffix among {', '.join(suffixes)} (got {out_path.name!r})"
        )
    return want


def _name_of(fn) -> str:
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{mod}.{qual}" if mod else qual


def _checkpoint_targets(sd: dict, include, exclude) -> tuple[list[WeightTarget], dict[str, str]]:
    """Targets chosen by name and shape (see the module docstring), and why others were left."""
    from graphnn.extract.rules import Rule, hf_conv1d_layout, rule_from_name

    inc = _as_patterns(include, "include")
    exc = _as_patterns(exclude, "exclude")
    targets, skipped = [], {}
    hf_conv1d = hf_conv1d_layout({n: tuple(t.shape) for n, t in sd.items() if isinstance(t, torch.Tensor)})
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
            skipped[name] = "not a weight (bias, norm parameter, buffer or non-float tensor)"
            continue
        rule = rule_from_name(name, tuple(t.shape), hf_conv1d)
        kind = rule.kind if isinstance(rule, Rule) else None
        chosen = _matches(name, inc) if inc else kind in _DEFAULT_KINDS
        if chosen and exc and _matches(name, exc):
            skipped[name] = "excluded by an exclude glob"
            continue
        if not chosen:
            skipped[name] = (
                f"not matched by include={list(inc)}" if inc else
                f"{kind} weight: not re-initialised by default (name it with include=...)" if kind else
                f"not a layer weight: {rule}"
            )
            continue
        layout = "transposed" if kind == "hf_conv1d" else "out_first"
        targets.append(WeightTarget(name, t, layout, 1))
    if not targets:
        raise ValueError(
            "no tensor of the checkpoint is a weight to re-initialise"
            + (f" (include={list(inc)}, exclude={list(exc)})" if inc or exc else "")
            + "; tensors seen: " + ", ".join(list(sd)[:20]) + (" ..." if len(sd) > 20 else "")
        )
    return targets, skipped


def _variances(t: WeightTarget) -> dict:
    j, vr, vc = tensor_strength_variance(t.units())
    return {"J": j, "var_rows": vr, "var_cols": vc}


class _Checkpoint:
    """A checkpoint read whole, so that writing it back keeps everything that is not rewired:
    the wrapper dict of a pickle (epoch, optimizer state, ...), the ``module.``/``_orig_mod.``
    key prefixes, non-tensor entries, and a safetensors file's metadata. ``tensors`` holds the
    state_dict's tensors under their unprefixed names."""

    def __init__(self, path: Path, trust: bool):
        from graphnn.extract.checkpoints import locate_state_dict, torch_load

        self.path = path
        self.metadata: dict[str, str] = {}
        if path.suffix in _SAFETENSORS:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                self.metadata = dict(f.metadata() or {})
                self.tensors = {k: f.get_tensor(k) for k in f.keys()}
            self.container = self.inner = None
            self.prefix = ""
            return
        self.container = torch_load(path, trust=trust)
        _, self.prefix, self.inner = locate_state_dict(self.container)
        if not isinstance(self.inner, dict):
            raise ValueError(
                f"{path} stores a {type(self.inner).__name__}, not a state_dict: re-save it with "
                "torch.save(model.state_dict(), ...) and rewire that file"
            )
        n = len(self.prefix)
        self.tensors = {str(k)[n:]: v for k, v in self.inner.items() if isinstance(v, torch.Tensor)}

    def write(self, path: Path, changed: Iterable[str], metadata: dict[str, str]) -> None:
        """Write the checkpoint with the ``changed`` tensors replaced (not atomic: the caller
        writes to a temporary file)."""
        from graphnn.extract.checkpoints import write_safetensors

        if self.container is None:
            write_safetensors(self.tensors, path, {**self.metadata, **metadata})
            return
        for name in changed:
            self.inner[self.prefix + name] = self.tensors[name]
        torch.save(self.container, path)


def rewire_checkpoint(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    method: str = "pa",
    seed: int | None = None,
    *,
    mode: str = "faithful",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    init: Callable[[torch.Tensor], torch.Tensor] = torch.nn.init.kaiming_normal_,
    trials: int = 100,
    gamma: float = 1.0,
    scope: str = "network",
    conv: str = "l2",
    device: str = "auto",
    trust: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write a re-initialised copy of a checkpoint and ``<out_path>.provenance.json``; returns
    the provenance record (also written as JSON).

    Parameters
    ----------
    in_path : checkpoint file (``.safetensors``, ``.pt/.pth/.bin/.ckpt``) or model folder.
    out_path : the new file; same format as the input; never the input itself.
    method : ``"pa"``, ``"variance-search"`` or ``"hcore"`` (see the module docstring).
    seed : non-negative int; ``None`` draws one from OS entropy and records it, so every
        output can be reproduced from its provenance.
    mode, device : PA rewiring mode and device (``method="pa"``).
    include, exclude : globs on tensor names (``pa`` and ``variance-search``).
    init, trials : initialiser and number of draws (``variance-search``); ``init`` is also the
        base initialiser of ``hcore``.
    gamma, scope, conv : hypercore re-initialisation options (``hcore``).
    trust : allow a full unpickle of a ``.pt`` file that safe loading refuses (trusted files only).
    overwrite : replace an existing ``out_path`` (never the input).

    The record holds: schema, graphnn/torch/numpy versions, UTC time, method, options, seed (and
    whether it was drawn), the input's SHA-256 (per file for a folder), the output's SHA-256 and,
    per tensor, whether it was changed and its strength variance ``J`` (with the row and column
    variances) before and after.
    """
    import graphnn

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    _check_paths(in_path, out_path, overwrite)
    seed = _check_seed(seed)
    seed_source = "given"
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
        seed_source = "drawn"
    if method == "hcore":
        gamma = _check_gamma(gamma)
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
        if include is not None or exclude is not None:
            raise ValueError("method='hcore' redraws every weight of the graph; include/exclude do not apply")

    input_record = _describe_input(in_path)
    ckpt = _Checkpoint(in_path, trust)
    sd = ckpt.tensors
    # work on copies: tensors may share memory with a memory-mapped input file
    options: dict
    per_tensor: list[dict] = []
    if method in ("pa", "variance-search"):
        targets, skipped = _checkpoint_targets(sd, include, exclude)
        for t in targets:
            sd[t.name] = t.tensor = t.tensor.detach().clone()
        before = {t.name: _variances(t) for t in targets}
        if method == "pa":
            rewire_targets_(targets, seed=seed, mode=mode, device=device)
            options = {"mode": mode, "device": device}
        else:
            search_targets_(targets, init, trials, seed)
            options = {"init": _name_of(init), "trials": trials}
        options.update(include=list(_as_patterns(include, "include")), exclude=list(_as_patterns(exclude, "exclude")))
        after = {t.name: _variances(t) for t in targets}
        changed = {t.name for t in targets}
    else:
        g = hcore_graph(sd, conv)
        products = None
        if gamma != 0:
            products = endpoint_products(g, _core_vectors(compute_cores(g, scope), g))
        else:
            products = {b.param: (None, None) for b in g.blocks.values()}
        views = {name: WeightTarget(name, sd[name]) for name in products}
        before = {name: _variances(v) for name, v in views.items()}
        for name in products:
            sd[name] = sd[name].detach().clone()
        reinit_tensors_(sd, products, gamma, init, seed)
        after = {name: _variances(WeightTarget(name, sd[name])) for name in products}
        changed = set(products)
        skipped = {n: "not mapped to a graph block (see graphnn.extract coverage)" for n in sd if n not in changed}
        options = {"gamma": gamma, "scope": scope, "conv": conv, "base_init": _name_of(init)}
    for name, t in sd.items():
        rec = {"name": name, "shape": list(t.shape) if isinstance(t, torch.Tensor) else None,
               "dtype": str(t.dtype).replace("torch.", "") if isinstance(t, torch.Tensor) else type(t).__name__,
               "changed": name in changed}
        if name in changed:
            rec.update({f"{k}_before": v for k, v in before[name].items()})
            rec.update({f"{k}_after": v for k, v in after[name].items()})
        else:
            rec["reason"] = skipped.get(name, "")
        per_tensor.append(rec)

    record = {
        "schema": PROVENANCE_SCHEMA,
        "tool": "graphnn",
        "graphnn_version": graphnn.__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "options": options,
        "seed": seed,
        "seed_source": seed_source,
        "input": input_record,
        "output": {"path": str(out_path)},
        "tensors": per_tensor,
    }
    _write_both(ckpt, changed, record, out_path)
    return record


def _write_both(ckpt: _Checkpoint, changed: set[str], record: dict, out_path: Path) -> None:
    """Write the checkpoint and its provenance to temporary files in the output folder, then
    move both into place; on any failure remove the temporary files and re-raise."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    tmp_ckpt = out_path.parent / f".{out_path.name}.{token}.partial{out_path.suffix}"
    json_path = Path(str(out_path) + PROVENANCE_SUFFIX)
    tmp_json = out_path.parent / f".{json_path.name}.{token}.partial"
    try:
        meta = {"graphnn_method": record["method"], "graphnn_seed": str(record["seed"]),
                "graphnn_version": record["graphnn_version"], "format": "pt"}
        ckpt.write(tmp_ckpt, changed, meta)
        digest, size = _sha256(tmp_ckpt)
        record["output"].update(sha256=digest, bytes=size)
        with open(tmp_json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_ckpt, out_path)
        os.replace(tmp_json, json_path)
    except BaseException:
        for p in (tmp_ckpt, tmp_json):
            if p.exists():
                p.unlink()
        raise
