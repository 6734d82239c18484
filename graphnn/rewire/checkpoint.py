"""Re-initialise the weights of a checkpoint file or model folder and write a new one with a
provenance record.

``rewire_checkpoint(in_path, out_path, method=...)`` reads the checkpoint with graphnn's safe
loader, applies one re-initialiser and writes the result in the same format (safetensors stays
safetensors, a pickle ``.pt/.pth/.bin/.ckpt`` stays a pickle). The input is never written to (an
output that is the input, by path or by inode, or a path inside an input folder, is refused).

Files: ``out_path`` and ``<out_path>.provenance.json`` beside it. Everything that is not rewired is
kept: a pickle's wrapper dict (epoch, optimizer state, ...), its key prefixes and non-tensor entries,
a safetensors file's metadata. *Publication order*: both are written to temporary files first; then
the provenance JSON is published, then the checkpoint, each exclusively unless ``overwrite=True``
(:func:`graphnn.atomic.atomic_write`). So a rewired checkpoint is never visible without its
provenance; a failure between the two steps removes the published JSON again, and a process killed
exactly there (``kill -9``) leaves only ``<out_path>.provenance.json``, whose ``output.sha256``
names no file: a later ``rewire_checkpoint`` to the same path refuses it as "left by an interrupted
run" unless ``overwrite=True``, and its stale temporary checkpoint is removed.

Folders (sharded ``*.safetensors`` or ``pytorch_model-*.bin`` with their index, or one
``model.safetensors``/``pytorch_model.bin``): ``out_path`` is a folder with the same shard names,
layout and index; ``config.json`` and every other file are copied byte for byte, so
``from_pretrained(out_path)`` loads it; ``graphnn.provenance.json`` is written inside. Shards are
processed one at a time (memory: the largest shard, plus the tensors of a tie group that spans
shards), and the folder is written as a whole under a temporary sibling name and renamed at the end
(:func:`graphnn.atomic.atomic_folder`): it appears complete or not at all.

Selection: :func:`graphnn.extract.select_weights`, the policy extraction uses (``describe``'s
mapped rows): for a bare checkpoint, weights are recognised by name and shape (Linear-like 2-D
``*weight`` tensors, 3-5-D conv kernels, GPT-2 ``Conv1D`` weights stored ``(in, out)`` and seen as
``(out, in)``, fused ``in_proj_weight``); embedding tables only with ``include_embeddings=True``;
never biases, norm parameters, buffers or RNN weights. A ConvTranspose kernel cannot be told from a
conv kernel by its shape: it is flattened by its stored first axis. Tied tensors (shared storage in
a pickle; ``lm_head.weight`` and the input embedding when the folder's ``config.json`` ties them)
are re-initialised once and written under every stored name (one storage in a pickle; from a
safetensors folder the LM head is not stored and ``from_pretrained`` re-ties it to the rewired
embedding).

Methods: ``"pa"`` (:func:`pa_rewire_`, per tensor; in ``mode="fast"`` the random stream is shared
within one file or shard), ``"variance-search"`` (:func:`min_strength_variance_search_` with
``init``) and ``"hcore"`` (:func:`hcore_reinit_`'s rule on the graph extracted from the checkpoint:
every weight the graph maps is redrawn with ``init``). ``init`` defaults to ``"match"`` (a normal
draw with each tensor's own mean and std, see :mod:`graphnn.rewire.inits`), since checkpoint
weights are rarely Kaiming-scaled.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch

from ..analyses.strength import tensor_strength_variance
from ..atomic import atomic_folder, atomic_write, partial_name, remove_stale_partials
from ..digest import sha256_of
from ..errors import InvalidParameterError, RefusedOverwriteError
from ..extract.selection import Selection, TieGroup, read_config, records_from_entries, tie_groups
from ._targets import WeightTarget, _as_patterns
from .hcore_init import SCOPES, _check_gamma, _core_vectors, compute_cores, endpoint_products, hcore_graph, reinit_tensors_
from .inits import MATCH, check_init, init_name
from .pa import _check_seed, rewire_targets_
from .variance_search import search_targets_

if TYPE_CHECKING:
    from ..extract.checkpoints import SafetensorsHeader

METHODS = ("pa", "variance-search", "hcore")
PROVENANCE_SUFFIX = ".provenance.json"
#: The provenance record inside a rewired folder.
FOLDER_PROVENANCE = "graphnn.provenance.json"
PROVENANCE_SCHEMA = "graphnn.rewire.provenance/2"

_SAFETENSORS = (".safetensors",)
_PICKLE = (".pt", ".pth", ".bin", ".ckpt")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
#: Dtypes torch stores but cannot compute in (CPU kernels missing): rewired via float32.
_STORAGE_ONLY = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                      if hasattr(torch, n))


def _format_of_file(path: Path) -> str | None:
    if path.suffix in _SAFETENSORS:
        return "safetensors"
    if path.suffix in _PICKLE:
        return "pickle"
    return None


def _sha256(path: Path) -> tuple[str, int]:
    return sha256_of(path), path.stat().st_size


def _describe_folder(path: Path, skip: Iterable[str] = ()) -> list[dict]:
    files = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel not in skip:
            digest, size = _sha256(p)
            files.append({"name": rel, "sha256": digest, "bytes": size})
    return files


def _describe_input(path: Path) -> dict:
    if path.is_dir():
        return {"path": str(path), "files": _describe_folder(path)}
    digest, size = _sha256(path)
    return {"path": str(path), "sha256": digest, "bytes": size}


def _same_file(a: Path, b: Path) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:  # pragma: no cover - races, permissions
        return False


def _check_file_paths(in_path: Path, out_path: Path, overwrite: bool) -> str:
    """Refuse writing onto the input or an existing output; check formats. Returns the format."""
    if _same_file(in_path, out_path):
        suffix = "".join(in_path.suffixes[-1:]) or ".pt"
        raise RefusedOverwriteError(
            f"{out_path} is the input checkpoint {in_path}: rewire_checkpoint never overwrites its input; "
            f"choose another out_path (e.g. {in_path.name[:len(in_path.name) - len(suffix)]}.rewired{suffix})"
        )
    if out_path.is_dir():
        raise RefusedOverwriteError(f"{out_path} is a folder: pass a file path (e.g. {out_path / in_path.name})")
    want = _format_of_file(in_path) or "pickle"
    got = _format_of_file(out_path)
    if got != want:
        suffixes = _SAFETENSORS if want == "safetensors" else _PICKLE
        raise InvalidParameterError(
            f"the input is a {want} checkpoint, so the output is written in the same format: give out_path "
            f"a suffix among {', '.join(suffixes)} (got {out_path.name!r}, e.g. "
            f"{out_path.with_suffix(suffixes[0]).name!r})"
        )
    prov = _provenance_path(out_path)
    if not overwrite:
        if os.path.lexists(out_path):
            raise RefusedOverwriteError(
                f"{out_path} already exists: pass overwrite=True (CLI --overwrite) to replace it, or choose another path")
        if os.path.lexists(prov):
            raise RefusedOverwriteError(
                f"{prov} already exists without its checkpoint {out_path.name} (left by an interrupted or concurrent "
                "rewire): remove it, pass overwrite=True (CLI --overwrite), or choose another path")
    return want


def _check_folder_paths(in_dir: Path, out_dir: Path, overwrite: bool) -> None:
    src, dst = in_dir.resolve(), out_dir.resolve()
    if src == dst or src in dst.parents:
        raise RefusedOverwriteError(
            f"{out_dir} is the input folder {in_dir} or inside it: rewire_checkpoint never writes into its input; "
            f"choose a sibling folder (e.g. {in_dir.parent / (in_dir.name + '-rewired')})")
    if dst in src.parents:
        raise RefusedOverwriteError(f"{out_dir} contains the input folder {in_dir}: choose a folder outside it")
    if _format_of_file(out_dir) is not None or out_dir.name.endswith(".json"):
        raise InvalidParameterError(
            f"the input {in_dir} is a model folder, so the output is a folder with the same shards and files: give "
            f"out_path a folder name, not {out_dir.name!r} (e.g. {in_dir.name + '-rewired'!r})")
    if out_dir.exists() and not out_dir.is_dir():
        raise RefusedOverwriteError(f"{out_dir} exists and is not a folder: choose another out_path")
    if os.path.lexists(out_dir) and not overwrite:
        raise RefusedOverwriteError(
            f"{out_dir} already exists: pass overwrite=True (CLI --overwrite) to replace it, or choose another folder")


def _provenance_path(out_path: Path) -> Path:
    return Path(str(out_path) + PROVENANCE_SUFFIX)


def _variances(t: WeightTarget) -> dict:
    j, vr, vc = tensor_strength_variance(t.units())
    return {"J": j, "var_rows": vr, "var_cols": vc}


# -- one set of tensors (a file, or one shard) ------------------------------------------------
class _Plan:
    """What to do with the tensors of one checkpoint: the tie groups of the selection policy,
    and, for ``hcore``, the graph's core lookup."""

    def __init__(self, method, groups: list[TieGroup], seed, options: dict, graph=None, lookup=None):
        self.method, self.groups, self.seed, self.options = method, groups, seed, options
        self.graph, self.lookup = graph, lookup
        self.group_of = {n: g for g in groups for n in g.names}
        # group name -> its rewired tensor while a later shard still stores a name of the group
        # (a tie spanning shards), else None: a folder's rewired tensors are not held to the end
        self.done: dict[str, torch.Tensor | None] = {}
        self.before: dict[str, dict] = {}
        self.after: dict[str, dict] = {}

    def changed_groups(self) -> list[TieGroup]:
        if self.method != "hcore":
            return [g for g in self.groups if g.selected]
        mapped = {b.param for b in self.graph.blocks.values()}
        return [g for g in self.groups if any(n in mapped for n in g.names)]

    def pending(self, names: Iterable[str]) -> set[str]:
        """The names among ``names`` whose values :meth:`apply` reads: tensors of groups it will
        rewire that no earlier shard has rewired already."""
        names = set(names)
        return {n for g in self.changed_groups() if g.names[0] not in self.done for n in g.stored if n in names}

    def apply(self, sd: dict[str, torch.Tensor], owned: bool = False) -> set[str]:
        """Rewire the groups stored in ``sd`` (rewired tensors are new objects, every stored name
        of a group gets the same one); returns the names changed in ``sd``. ``owned``: the
        tensors of ``sd`` belong to the caller alone (read into fresh memory), so they are
        rewired in place instead of being copied first."""
        changed: set[str] = set()
        todo: list[tuple[TieGroup, WeightTarget]] = []
        for g in self.changed_groups():
            here = [n for n in g.stored if n in sd]
            if not here:
                continue
            if g.names[0] in self.done:  # rewired with an earlier shard: same values here
                for n in here:
                    sd[n] = self.done[g.names[0]]
                changed.update(here)
                continue
            src = sd[here[0]]
            if not src.is_floating_point():
                raise InvalidParameterError(f"{here[0]} has dtype {src.dtype}; only floating-point weights can be rewired")
            # fp8 is a storage format torch cannot compute in: work in float32, store back as fp8
            # (exact for PA, a permutation of representable values; a redraw is rounded to fp8)
            if src.dtype in _STORAGE_ONLY:
                t = src.detach().to(torch.float32)
            else:
                t = src.detach() if owned else src.detach().clone()
            for n in here:
                sd[n] = t
            changed.update(here)
            todo.append((g, WeightTarget(g.names[0], t, g.primary.layout, g.primary.groups, g.names[1:]),
                         src.dtype, here))
        if not todo:
            return changed
        targets = [t for _, t, _, _ in todo]
        for t in targets:
            self.before[t.name] = _variances(t)
        if self.method == "pa":
            rewire_targets_(targets, seed=self.seed, mode=self.options["mode"], device=self.options["device"])
        elif self.method == "variance-search":
            search_targets_(targets, self.options["init_fn"], self.options["trials"], self.seed)
        else:
            self._hcore(todo)
        for g, t, dtype, here in todo:
            final = t.tensor.to(dtype) if dtype in _STORAGE_ONLY else t.tensor
            self.after[t.name] = _variances(WeightTarget(t.name, final.to(torch.float32) if final is not t.tensor
                                                         else final, t.layout, t.groups))
            for n in here:
                sd[n] = final
            self.done[g.names[0]] = final if any(n not in sd for n in g.stored) else None
        return changed

    def _hcore(self, todo: list[tuple]) -> None:
        tensors, products = {}, {}
        for g, t, _, _ in todo:
            names = set(g.names)
            params = [b.param for b in self.graph.blocks.values() if b.param in names]
            key = params[0]
            if self.options["gamma"] != 0:
                prods = endpoint_products(self.graph, self.lookup, params={key})
            else:
                prods = {key: (None, None)}
            tensors[key] = t.tensor
            products[key] = prods[key]
        reinit_tensors_(tensors, products, self.options["gamma"], self.options["init_fn"], self.seed)


def _plan(method, records, seed, options, graph_source) -> _Plan:
    groups = tie_groups(records)
    if method != "hcore":
        if not any(g.selected for g in groups):
            inc, exc = options.get("include") or [], options.get("exclude") or []
            weights = [r.name for r in records if r.is_weight and r.stored]
            raise InvalidParameterError(
                "no tensor of the checkpoint is a weight to re-initialise"
                + (f" (include={inc}, exclude={exc})" if inc or exc else "")
                + "; its weights are: " + (", ".join(weights[:20]) + (" ..." if len(weights) > 20 else "") or "none")
                + ("" if options.get("include_embeddings") else " (embeddings need include_embeddings=True)"))
        return _Plan(method, groups, seed, options)
    g = hcore_graph(graph_source, options["conv"])
    lookup = _core_vectors(compute_cores(g, options["scope"]), g) if options["gamma"] != 0 else None
    return _Plan(method, groups, seed, options, g, lookup)


def _tensor_records(names_and_tensors, plan: _Plan, changed: set[str]) -> list[dict]:
    out = []
    reasons = {n: g.reason for g in plan.groups for n in g.names}
    for name, t in names_and_tensors:
        g = plan.group_of.get(name)
        rec = {"name": name, "shape": list(t.shape) if isinstance(t, torch.Tensor) else None,
               "dtype": str(t.dtype).replace("torch.", "") if isinstance(t, torch.Tensor) else type(t).__name__,
               "changed": name in changed}
        if g is not None and len(g.names) > 1:
            rec["tied_with"] = [n for n in g.names if n != name]
        if name in changed:
            key = g.names[0]
            rec.update({f"{k}_before": v for k, v in plan.before[key].items()})
            rec.update({f"{k}_after": v for k, v in plan.after[key].items()})
        else:
            rec["reason"] = (reasons.get(name) or
                             ("not mapped to a graph block (see graphnn.extract coverage)" if plan.method == "hcore"
                              else "not a weight (bias, norm parameter, buffer or non-float tensor)"))
        out.append(rec)
    return out


class _Checkpoint:
    """A checkpoint file read whole, so that writing it back keeps everything that is not
    rewired: the wrapper dict of a pickle (epoch, optimizer state, ...), the ``module.``/
    ``_orig_mod.`` key prefixes, non-tensor entries, and a safetensors file's metadata.
    ``tensors`` holds the state_dict's tensors under their unprefixed names."""

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
            raise InvalidParameterError(
                f"{path} stores a {type(self.inner).__name__}, not a state_dict: re-save it with "
                "torch.save(model.state_dict(), ...) and rewire that file"
            )
        n = len(self.prefix)
        self.tensors = {str(k)[n:]: v for k, v in self.inner.items() if isinstance(v, torch.Tensor)}

    def write(self, path: Path, changed: Iterable[str], metadata: dict[str, str]) -> None:
        """Write the checkpoint with the ``changed`` tensors replaced (not atomic: the caller
        writes to a temporary file). Names that share one tensor keep sharing it in a pickle."""
        from graphnn.extract.checkpoints import write_safetensors

        if self.container is None:
            write_safetensors(self.tensors, path, {**self.metadata, **metadata})
            return
        for name in changed:
            self.inner[self.prefix + name] = self.tensors[name]
        torch.save(self.container, path)


# -- the public function ------------------------------------------------------------------------
def rewire_checkpoint(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    method: str = "pa",
    seed: int | None = None,
    *,
    mode: str = "faithful",
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    include_embeddings: bool = False,
    init: str | Callable[[torch.Tensor], torch.Tensor] = MATCH,
    trials: int = 100,
    gamma: float = 1.0,
    scope: str = "network",
    conv: str = "l2",
    device: str = "auto",
    trust: bool = False,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Write a re-initialised copy of a checkpoint file (plus ``<out_path>.provenance.json``) or
    of a model folder (a folder, with ``graphnn.provenance.json`` inside); returns the provenance
    record (also written as JSON). See the module docstring for formats, ties and atomicity.

    Parameters
    ----------
    in_path : checkpoint file (``.safetensors``, ``.pt/.pth/.bin/.ckpt``) or model folder.
    out_path : a file of the same format for a file; a folder for a folder; never the input.
    method : ``"pa"``, ``"variance-search"`` or ``"hcore"`` (see the module docstring).
    seed : non-negative int; ``None`` draws one from OS entropy and records it, so every
        output can be reproduced from its provenance.
    mode, device : PA rewiring mode and device (``method="pa"``).
    include, exclude, include_embeddings : the selection (``pa`` and ``variance-search``), as in
        :func:`graphnn.extract`.
    init : base initialiser of ``variance-search`` and ``hcore``: ``"match"`` (default), a
        ``torch.nn.init`` name such as ``"kaiming_normal_"``, or a callable.
    trials : number of draws (``variance-search``).
    gamma, scope, conv : hypercore re-initialisation options (``hcore``).
    trust : allow a full unpickle of a ``.pt`` file that safe loading refuses (trusted files only).
    overwrite : replace an existing output (never the input).
    progress : ``progress(step, done, total)``, called for a folder as the step ``"rewire"``
        after each shard (``done`` shards of ``total``).

    The record holds: schema, graphnn/torch/numpy versions, UTC time, method, options, seed (and
    whether it was drawn), the input's SHA-256 (per file for a folder), the output's SHA-256 (per
    file for a folder) and, per tensor, whether it was changed, the names it is tied with, and its
    strength variance ``J`` (with the row and column variances) before and after.
    """
    import graphnn
    from graphnn.extract.checkpoints import _require_path

    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {METHODS}, not {method!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    _require_path(in_path)
    folder = in_path.is_dir()
    if folder:
        _check_folder_paths(in_path, out_path, overwrite)
    else:
        _check_file_paths(in_path, out_path, overwrite)
    seed = _check_seed(seed)
    seed_source = "given"
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))
        seed_source = "drawn"
    selection = Selection(include, exclude, include_embeddings)
    options: dict = {}
    if method == "pa":
        options.update(mode=mode, device=device)
    elif method == "variance-search":
        options.update(init=init_name(check_init(init)), trials=trials)
    else:
        gamma = _check_gamma(gamma)
        if scope not in SCOPES:
            raise InvalidParameterError(f"scope must be one of {SCOPES}, not {scope!r}")
        if include is not None or exclude is not None or include_embeddings:
            raise InvalidParameterError(
                "method='hcore' redraws every weight of the graph; include/exclude/include_embeddings do not apply")
        options.update(gamma=gamma, scope=scope, conv=conv, base_init=init_name(check_init(init)))
    if method != "hcore":
        options.update(include=list(_as_patterns(include, "include")), exclude=list(_as_patterns(exclude, "exclude")),
                       include_embeddings=include_embeddings)
    work = {**options, "init_fn": check_init(init), "trials": trials, "gamma": gamma, "scope": scope, "conv": conv,
            "mode": mode, "device": device}
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
        "input": _describe_input(in_path),
        "output": {"path": str(out_path)},
    }
    if folder:
        _rewire_folder(in_path, out_path, method, seed, selection, work, record, trust, overwrite, progress)
    else:
        _rewire_file(in_path, out_path, method, seed, selection, work, record, trust, overwrite)
    return record


def _metadata(record: dict) -> dict[str, str]:
    return {"graphnn_method": record["method"], "graphnn_seed": str(record["seed"]),
            "graphnn_version": record["graphnn_version"]}


# -- a single file ------------------------------------------------------------------------------
def _rewire_file(in_path, out_path, method, seed, selection, work, record, trust, overwrite) -> None:
    from graphnn.extract.checkpoints import entries_from_state_dict

    ckpt = _Checkpoint(in_path, trust)
    sd = ckpt.tensors
    records = records_from_entries(entries_from_state_dict(sd), selection)
    plan = _plan(method, records, seed, work, sd)
    originals = list(sd.items())
    changed = plan.apply(sd)
    record["tensors"] = _tensor_records(((n, sd[n]) for n, _ in originals), plan, changed)
    _publish_pair(ckpt, changed, record, out_path, overwrite)


def _publish_checkpoint(tmp: Path, out_path: Path, overwrite: bool) -> None:
    """Move the finished temporary checkpoint to ``out_path`` (exclusively unless ``overwrite``)."""
    atomic_write(out_path, lambda slot: os.replace(tmp, slot), overwrite=overwrite)


def _publish_pair(ckpt: _Checkpoint, changed: set[str], record: dict, out_path: Path, overwrite: bool) -> None:
    """Write the checkpoint to a temporary file, publish the provenance JSON, then the checkpoint
    (module docstring); on failure nothing of this run stays visible."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_path)
    prov = _provenance_path(out_path)
    tmp = partial_name(out_path)
    published_prov = False
    try:
        meta = {**_metadata(record), "format": "pt"}
        ckpt.write(tmp, changed, meta)
        digest, size = _sha256(tmp)
        record["output"].update(sha256=digest, bytes=size)
        text = json.dumps(record, indent=2) + "\n"
        atomic_write(prov, lambda p: Path(p).write_text(text, encoding="utf-8"), overwrite=overwrite)
        published_prov = True
        _publish_checkpoint(tmp, out_path, overwrite)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if published_prov and not (os.path.exists(out_path) and _sha256(out_path)[0] == record["output"]["sha256"]):
            try:
                os.unlink(prov)
            except FileNotFoundError:
                pass
        raise


# -- a model folder -----------------------------------------------------------------------------
def _folder_layout(folder: Path) -> tuple[list[str], str | None]:
    """The shard files of a model folder in index order, and the index file's name (``None``
    for a single-file folder). The index is read and its shard names checked (inside the folder,
    regular files) by the same functions extraction uses."""
    from ..errors import CorruptCheckpointError
    from ..extract.checkpoints import member_path, read_index, require_regular_file

    for index_name in _INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            shards = list(dict.fromkeys(read_index(index).values()))
            for shard in shards:
                require_regular_file(member_path(folder, shard, index), "shard")
            return [str(sh) for sh in shards], index_name
    for single in _SINGLE_FILES:
        if (folder / single).is_file():
            require_regular_file(folder / single)
            return [single], None
    raise CorruptCheckpointError(
        f"{folder} is not a model folder: it has no {' or '.join(_INDEX_FILES + _SINGLE_FILES)}; pass a checkpoint file "
        "or a Hugging Face model folder")


def _read_shard(path: Path, trust: bool, wanted: Callable[[Iterable[str]], set[str]] | None = None
                ) -> tuple[dict, SafetensorsHeader | None]:
    """A shard's tensors and, for safetensors, its parsed header
    (:func:`~graphnn.extract.checkpoints.safetensors_header`, which checks it; parsed once and
    handed on to :func:`_write_shard`). For safetensors with ``wanted`` (names -> the names to
    read), only those are read, each into its own memory (``pread``, no memory map); the others
    are shape-and-dtype placeholders on the ``meta`` device, which :func:`_write_shard` copies
    from the file byte for byte. Names come in sorted order (as ``safe_open(...).keys()``).
    Pickle shards are read whole (header ``None``)."""
    from graphnn.extract.checkpoints import read_tensor, require_regular_file, safetensors_header, torch_load

    require_regular_file(path, "shard")
    if path.suffix in _SAFETENSORS:
        header = safetensors_header(path)
        names = sorted(header.tensors)
        read = set(names) if wanted is None else wanted(names)
        sd = {}
        for n in names:
            raw, shape, _, _ = header.tensors[n]
            if n in read or _dtype_of(raw) is None:
                sd[n] = read_tensor(path, header, n)
            else:
                sd[n] = torch.empty(shape, dtype=_dtype_of(raw), device="meta")
        return sd, header
    obj = torch_load(path, trust=trust)
    if not isinstance(obj, dict):
        raise InvalidParameterError(f"{path} holds a {type(obj).__name__}, not a state_dict shard")
    return obj, None


def _write_shard(sd: dict, metadata: dict | None, path: Path, source: Path | None = None,
                 changed: Iterable[str] = (), header: SafetensorsHeader | None = None) -> None:
    """Write one output shard. Safetensors with ``source``: streamed as a copy of ``source`` with
    the ``changed`` tensors of ``sd`` replaced (:func:`~graphnn.extract.checkpoints.write_safetensors_like`:
    the other tensors are copied file to file, never held in memory); ``header`` is ``source``'s
    parsed header when the caller has it."""
    from graphnn.extract.checkpoints import write_safetensors, write_safetensors_like

    if path.suffix in _SAFETENSORS and source is not None:
        write_safetensors_like(source, path, {n: sd[n] for n in changed}, metadata, header=header)
    elif path.suffix in _SAFETENSORS:
        write_safetensors(sd, path, metadata)
    else:
        torch.save(sd, path)


def _dtype_of(raw: str) -> torch.dtype | None:
    from graphnn.extract.checkpoints import _SAFETENSORS_DTYPES

    return _SAFETENSORS_DTYPES.get(raw)


def _rewire_folder(in_dir, out_dir, method, seed, selection, work, record, trust, overwrite, progress=None) -> None:
    from graphnn.extract.checkpoints import open_checkpoint

    shards, index_name = _folder_layout(in_dir)
    records = records_from_entries(open_checkpoint(in_dir, trust=trust), selection, read_config(in_dir))
    plan = _plan(method, records, seed, work, in_dir)
    previous = in_dir / FOLDER_PROVENANCE
    if previous.is_file():
        try:
            record["input"]["provenance"] = json.loads(previous.read_text(encoding="utf-8"))
        except ValueError:
            pass
    shard_set = set(shards)

    def write(tmp: str) -> None:
        tmp_dir = Path(tmp)
        tensors: list[dict] = []
        for i, shard in enumerate(shards):  # one shard at a time; of a safetensors shard only the tensors to rewire
            if progress:
                progress("rewire", i, len(shards))
            src = in_dir / shard
            safetensors = src.suffix in _SAFETENSORS
            sd, header = _read_shard(src, trust, plan.pending) if safetensors else _read_shard(src, trust)
            names = list(sd)
            changed = plan.apply(sd, owned=safetensors)
            tensors += _tensor_records(((n, sd[n]) for n in names), plan, changed)
            dest = tmp_dir / shard
            dest.parent.mkdir(parents=True, exist_ok=True)
            if changed:
                meta = {**header.metadata, **_metadata(record)} if header is not None else None
                _write_shard(sd, meta, dest, source=src if safetensors else None, changed=changed, header=header)
            else:
                shutil.copyfile(in_dir / shard, dest)
            del sd
        if progress:
            progress("rewire", len(shards), len(shards))
        for p in sorted(in_dir.rglob("*")):  # every other file, byte for byte
            rel = p.relative_to(in_dir).as_posix()
            if rel in shard_set or rel == FOLDER_PROVENANCE or not p.is_file():
                continue
            (tmp_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, tmp_dir / rel)
        record["tensors"] = tensors
        files = _describe_folder(tmp_dir)
        record["output"].update(files=files, index=index_name, shards=shards)
        (tmp_dir / FOLDER_PROVENANCE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    record["output"]["provenance"] = str(out_dir / FOLDER_PROVENANCE)
    atomic_folder(out_dir, write, overwrite=overwrite)
