"""Reading and writing checkpoint files safely and lazily.

A checkpoint is opened as an ordered list of :class:`TensorEntry` (name, shape, dtype and a
loader): names and shapes are read without the tensor data, which is read when an analysis asks.

Formats: ``.pt/.pth/.bin`` (``torch.load(weights_only=True, map_location="cpu", mmap=True)``),
``.safetensors`` (``safetensors.safe_open``), and folders holding sharded weights with a
``model.safetensors.index.json`` or ``pytorch_model.bin.index.json`` (or a single
``model.safetensors`` / ``pytorch_model.bin``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..atomic import atomic_write
from ..errors import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None),
}
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class TensorEntry:
    """One named tensor of a checkpoint: shape and dtype known, data read by ``load()``.
    ``value`` holds a non-tensor object found under that name (reported, never mapped)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None
    load: Callable[[], torch.Tensor]
    in_memory: bool = False
    value: Any = None

    @property
    def is_tensor(self) -> bool:
        return self.dtype is not None


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# Segment names that usually come first / last inside their parent module. Used only to undo a
# lexical sort of names (which puts BERT's ``attention.output`` before ``attention.self`` and a
# ResNet's ``fc`` before ``layer1``).
_EARLY = {"embeddings": -2, "embed": -2, "stem": -2, "shared": -2, "wte": -2, "wpe": -2,
          "self": -1, "self_attn": -1, "attention": -1, "attn": -1, "encoder": -1,
          # attention projections in dataflow order q, k, v (then o/out_proj, late)
          "q": -3, "k": -2, "v": -1, "query": -3, "key": -2, "value": -1,
          "q_proj": -3, "k_proj": -2, "v_proj": -1, "q_lin": -3, "k_lin": -2, "v_lin": -1,
          # gated MLPs: gate, up (then down, late)
          "gate_proj": -2, "up_proj": -1, "w1": -2, "w3": -1, "wi": -1, "wi_0": -2, "wi_1": -1,
          # fused projections before the layer that reads them
          "query_key_value": -3, "qkv_proj": -3, "c_attn": -3, "W_pack": -3, "gate_up_proj": -1, "c_fc": -1,
          "dense_h_to_4h": -1}
_LATE = {"output": 1, "out_proj": 1, "o_proj": 1, "o": 1, "out_lin": 1, "down_proj": 1, "w2": 1, "wo": 1,
         "dense": 1, "dense_4h_to_h": 1,
         "fc": 2, "head": 2,
         "classifier": 2, "lm_head": 2, "pooler": 2}


def _model_order_key(name: str):
    return [(_EARLY.get(seg, _LATE.get(seg, 0)), _natural_key(seg)) for seg in name.split(".")]


def order_names(names: list[str]) -> list[str]:
    """Keep the stored order when it carries information; if the names are merely sorted
    lexically (as safetensors headers and HF index files store them), recover module order as
    far as names allow: numbers compare as numbers (``layer.2`` before ``layer.10``) and common
    segment names are placed early (``embeddings``/``shared``/``wte``, ``self``/``attention``,
    ``encoder`` before ``decoder``), in dataflow order (``q``, ``k``, ``v`` then ``o``;
    ``gate_proj``, ``up_proj`` then ``down_proj``) or late (``output``, ``o_proj``,
    ``down_proj``, ``fc``/``head``/``classifier``/``pooler``/``lm_head``)."""
    return sorted(names, key=_model_order_key) if names == sorted(names) else list(names)


def _require_path(path: Path) -> None:
    if not path.exists():
        hint = ""
        if path.parent.exists():
            near = sorted(p.name for p in path.parent.iterdir() if p.suffix in PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES)[:5]
            if near:
                hint = f" Checkpoints in {path.parent}: {', '.join(near)}."
        raise CheckpointNotFoundError(f"no such file or folder: {str(path)!r}.{hint}")


# -- pickle (.pt/.pth/.bin) -------------------------------------------------------------------
def torch_load(path: str | os.PathLike, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (mmap where the format allows).

    Raises :class:`UnsafeCheckpointError` when the file holds objects that only a full unpickle
    (which runs code from the file) can build; ``trust=True`` allows that full unpickle.
    Raises :class:`CorruptCheckpointError` for truncated or foreign files.
    """
    path = Path(path)
    _require_path(path)
    if path.is_dir():
        raise CorruptCheckpointError(f"{path} is a folder, not a checkpoint file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e) or not _is_valid_pickle(path):
            # torch's message advises weights_only=False, which is wrong for a damaged file
            raise CorruptCheckpointError(_corrupt_message(path, "its data is not a valid pickle stream")) from e
        if not trust:
            raise UnsafeCheckpointError(
                f"refused to load {path}: it contains Python objects that torch.load(weights_only=True) "
                "will not build, and loading it fully would run code stored in the file. If you trust "
                "where it came from, pass trust=True (CLI: --trust-checkpoint); better, re-save it as a "
                "plain state_dict or safetensors file."
            ) from e
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any failure of a trusted unpickle is a read failure
            raise CorruptCheckpointError(_corrupt_message(path, e2)) from e2
    except (UnsafeCheckpointError, CheckpointNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for bad files
        raise CorruptCheckpointError(_corrupt_message(path, e)) from e


def _is_valid_pickle(path: Path) -> bool:
    """Whether the file's (first) pickle stream parses, read with ``pickletools`` (which decodes
    opcodes and never builds objects): tells a refused-but-valid pickle from random bytes."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return False
                for _ in pickletools.genops(z.read(member)):
                    pass
                return True
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "not a valid pickle"
        return False


def _corrupt_message(path: Path, e: Exception | str) -> str:
    size = path.stat().st_size if path.exists() else 0
    cause = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return (
        f"could not read {path} ({size:,} bytes) as a checkpoint: {cause}. "
        "The file may be truncated or not a PyTorch/safetensors checkpoint; re-download or re-save it."
    )


def locate_state_dict(obj: Any) -> tuple[list[str], str, Any]:
    """Where the state_dict sits inside a loaded checkpoint: ``(keys, prefix, inner)``, where
    ``keys`` lead through wrapper dicts (``{"state_dict": ...}``, ``{"model": ...}``, ...) to the
    mapping (or module) ``inner``, and ``prefix`` is the ``module.`` (DDP) / ``_orig_mod.``
    (torch.compile) prefix shared by all its keys. Nothing is copied, so a caller can write
    tensors back into ``inner`` and save the whole checkpoint with everything else kept."""
    keys: list[str] = []
    for _ in range(4):
        if isinstance(obj, torch.nn.Module) or not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, torch.nn.Module))), None)
        if key is None:
            break
        keys.append(key)
        obj = obj[key]
    prefix = ""
    names = [str(k) for k in obj.keys()] if isinstance(obj, Mapping) else []
    changed = True
    while changed and names:
        changed = False
        for p in _PREFIXES:
            if all(n.startswith(prefix + p) for n in names):
                prefix += p
                changed = True
    return keys, prefix, obj


def unwrap_state_dict(obj: Any, path: str = "<object>") -> dict[str, Any]:
    """Find the state_dict inside a loaded checkpoint (see :func:`locate_state_dict`): unwrap
    ``{"state_dict": ...}``, ``{"model": ...}`` (and similar) containers and strip ``module.``
    (DDP) and ``_orig_mod.`` (torch.compile) prefixes shared by every key."""
    if not isinstance(obj, (Mapping, torch.nn.Module)):
        raise CorruptCheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)"
        )
    _, prefix, inner = locate_state_dict(obj)
    if isinstance(inner, torch.nn.Module):
        inner = inner.state_dict()
        _, prefix, inner = locate_state_dict(inner)
    return {str(k)[len(prefix):]: v for k, v in inner.items()}


def entries_from_state_dict(sd: Mapping[str, Any]) -> list[TensorEntry]:
    out = []
    for name, v in sd.items():
        if isinstance(v, torch.Tensor):
            out.append(TensorEntry(name, tuple(v.shape), v.dtype, (lambda v=v: v.detach()), in_memory=True))
        else:
            out.append(TensorEntry(name, (), None, (lambda: None), in_memory=True, value=v))
    return out


# -- safetensors -----------------------------------------------------------------------------
def _safetensors_entries(path: Path) -> list[TensorEntry]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys())
            info = {}
            raw_dtypes = {}
            for n in names:
                s = f.get_slice(n)
                raw_dtypes[n] = s.get_dtype()
                info[n] = (tuple(s.get_shape()), _SAFETENSORS_DTYPES.get(raw_dtypes[n]))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CorruptCheckpointError(_corrupt_message(path, e)) from e

    def loader(n: str) -> Callable[[], torch.Tensor]:
        def load() -> torch.Tensor:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return f.get_tensor(n)
        return load

    entries = []
    for n in order_names(names):
        shape, dtype = info[n]
        if dtype is None:  # a dtype torch cannot hold: reported, never read
            entries.append(TensorEntry(n, shape, None, loader(n), value=f"unsupported dtype {raw_dtypes[n]}"))
        else:
            entries.append(TensorEntry(n, shape, dtype, loader(n)))
    return entries


def _pickle_entries(path: Path, trust: bool) -> list[TensorEntry]:
    sd = unwrap_state_dict(torch_load(path, trust=trust), str(path))
    return entries_from_state_dict(sd)


def _file_entries(path: Path, trust: bool) -> list[TensorEntry]:
    if path.suffix in SAFETENSORS_SUFFIXES:
        return _safetensors_entries(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _pickle_entries(path, trust)
    # Unknown suffix: sniff. Safetensors starts with an 8-byte little-endian header length.
    if zipfile.is_zipfile(path):
        return _pickle_entries(path, trust)
    try:
        return _safetensors_entries(path)
    except CorruptCheckpointError:
        return _pickle_entries(path, trust)


def _folder_entries(path: Path, trust: bool) -> list[TensorEntry]:
    for index_name in INDEX_FILES:
        index = path / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorruptCheckpointError(f"{index} is not a valid index file (needs a 'weight_map'): {e}") from e
            shards: dict[str, dict[str, TensorEntry]] = {}
            for shard in dict.fromkeys(weight_map.values()):
                shard_path = path / shard
                if not shard_path.exists():
                    raise CorruptCheckpointError(
                        f"{index} lists shard {shard!r}, which is missing from {path}; the download is incomplete"
                    )
                shards[shard] = {e.name: e for e in _file_entries(shard_path, trust)}
            entries = []
            for name in order_names(list(weight_map)):
                shard = shards[weight_map[name]]
                if name not in shard:
                    raise CorruptCheckpointError(f"{index} maps {name!r} to {weight_map[name]!r}, which does not hold it")
                entries.append(shard[name])
            return entries
    for single in SINGLE_FILES:
        if (path / single).exists():
            return _file_entries(path / single, trust)
    found = sorted(p.name for p in path.iterdir())[:10]
    raise CorruptCheckpointError(
        f"{path} is a folder without {' or '.join(INDEX_FILES + SINGLE_FILES)}; found: {', '.join(found) or 'nothing'}. "
        "Pass a checkpoint file or a Hugging Face model folder."
    )


def open_checkpoint(path: str | os.PathLike, trust: bool = False) -> list[TensorEntry]:
    """Names, shapes and dtypes of every tensor in a checkpoint file or folder, in model order
    as far as the format tells; tensor data is read by each entry's ``load()``."""
    path = Path(path)
    _require_path(path)
    return _folder_entries(path, trust) if path.is_dir() else _file_entries(path, trust)


def load_state_dict(path: str | os.PathLike, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint into an ordered ``{name: tensor}`` dict (safe loading,
    wrappers and prefixes removed, non-tensor entries dropped)."""
    return {e.name: e.load() for e in open_checkpoint(path, trust=trust) if e.is_tensor}


def write_safetensors(sd: Mapping[str, torch.Tensor], path: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` of a state_dict whose tensors may share memory (shared
    ones are copied) or be non-contiguous views. Not atomic: see :func:`save_state_dict`."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    clean = {}
    for k, v in sd.items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        clean[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    save_file(clean, str(path), metadata=metadata)


def save_state_dict(sd: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a state_dict atomically in the format of ``path``'s suffix: ``.safetensors`` via
    safetensors (with ``metadata``), anything else via ``torch.save``."""
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        atomic_write(path, lambda tmp: write_safetensors(sd, tmp, metadata))
    else:
        atomic_write(path, lambda tmp: torch.save(dict(sd), tmp))
