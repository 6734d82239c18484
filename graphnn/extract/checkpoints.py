"""Reading and writing checkpoint files safely and lazily.

A checkpoint is opened as an ordered list of :class:`TensorEntry` (name, shape, dtype and a
loader): names and shapes are read without the tensor data, which is read when an analysis asks.

Formats: ``.pt/.pth/.bin`` (``torch.load(weights_only=True, map_location="cpu", mmap=True)``),
``.safetensors`` (``safetensors.safe_open``), and folders holding sharded weights with a
``model.safetensors.index.json`` or ``pytorch_model.bin.index.json`` (or a single
``model.safetensors`` / ``pytorch_model.bin``).

Reading is safe against hostile files:

- only regular files are opened (checked with ``os.stat`` first: a FIFO or a device such as
  ``/dev/zero`` is refused at once, never opened);
- every shard an index names must lie inside the model folder, also after following symlinks
  (absolute names and ``..`` are refused). The one exception is the Hugging Face cache layout,
  where ``snapshots/<revision>/`` holds links into the repository's ``blobs/`` folder;
- safetensors headers are parsed and validated by the ``safetensors`` library before anything is
  read (header length within the file, known dtypes, shapes matching ``data_offsets``, offsets
  contiguous, in range and covering the file); a bad header is a :class:`CorruptCheckpointError`;
- a malformed index (not JSON, no ``weight_map``, a ``weight_map`` that is not an object of
  strings, a tensor mapped to two different shards) is a :class:`CorruptCheckpointError`.

Duplicates: one shard named twice (or through two spellings or links to one file) is read once.
A tensor stored in several shards is read from the shard the index names, with a
:class:`~graphnn.errors.CheckpointWarning` naming every file that holds it; tensors stored in
shards but absent from the index are ignored, with a warning.

Cost: each safetensors file is opened, and its header parsed, once; the handle is kept for
every later tensor read (data read lazily through the library's memory map; at most
``MAX_OPEN_FILES`` files stay open, the least recently used are closed and reopened on demand).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import sys
import threading
import warnings
import weakref
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .._pages import register as register_file_pages
from ..atomic import atomic_write
from ..errors import CheckpointNotFoundError, CheckpointWarning, CorruptCheckpointError, UnsafeCheckpointError
from .rules import empty_skip_reason

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
#: Largest index file read (bytes); real ones are well under 1 MB per 10,000 tensors.
MAX_INDEX_BYTES = 64 * 2**20
#: Most safetensors files kept open at once, process-wide (see :class:`_SafetensorsFile`).
MAX_OPEN_FILES = 64
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class TensorEntry:
    """One named tensor of a checkpoint: shape and dtype known, data read by ``load()``.
    ``value`` holds a non-tensor object found under that name (reported, never mapped).
    ``skip_reason``: why the tensor cannot be an edge whatever its name (sparse, on the ``meta``
    device, a dimension of size 0, a dtype torch cannot hold), else ``None``."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype | None
    load: Callable[[], torch.Tensor]
    in_memory: bool = False
    value: Any = None
    skip_reason: str | None = None

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


_FILE_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
               (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def require_regular_file(path: Path, what: str = "checkpoint") -> os.stat_result:
    """``os.stat`` of ``path`` (following symlinks, opening nothing), refusing anything but a
    regular file: reading a FIFO blocks forever and a device such as ``/dev/zero`` never ends."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _require_path(path)
        raise
    except (OSError, ValueError) as e:  # permissions, a name too long, an embedded NUL byte
        raise CorruptCheckpointError(f"cannot read the {what} {str(path)!r}: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "special file")
        raise CorruptCheckpointError(
            f"refused to read the {what} {str(path)!r}: it is a {kind}, not a regular file "
            f"(reading it could block or never end). Pass a checkpoint file or a model folder."
        )
    return st


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
    require_regular_file(path)
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


def tensor_skip_reason(t: torch.Tensor) -> str | None:
    """Why an in-memory tensor cannot be read as edge weights, whatever its name: a sparse (or
    other non-strided) layout, the ``meta`` device (a shape without values), an empty shape."""
    if t.layout != torch.strided:
        layout = str(t.layout).replace("torch.", "")
        return (f"{layout} tensor: graphnn reads dense weights; convert it with .to_dense() "
                "before extracting if it is a layer weight")
    if t.device.type == "meta":
        return ("on the meta device: it has a shape but no values; load the real weights "
                "(e.g. from_pretrained or the checkpoint file) to analyse it")
    return empty_skip_reason(tuple(t.shape))


def entries_from_state_dict(sd: Mapping[str, Any]) -> list[TensorEntry]:
    out = []
    for name, v in sd.items():
        if isinstance(v, torch.Tensor):
            out.append(TensorEntry(name, tuple(v.shape), v.dtype, (lambda v=v: v.detach()), in_memory=True,
                                   skip_reason=tensor_skip_reason(v)))
        else:
            out.append(TensorEntry(name, (), None, (lambda: None), in_memory=True, value=v))
    return out


# -- safetensors -----------------------------------------------------------------------------
def _safe_open(path: Path):
    """``safetensors.safe_open`` (which validates the whole header before any data is read),
    with the library's errors turned into :class:`CorruptCheckpointError`."""
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CorruptCheckpointError(_corrupt_message(path, e)) from e


_open_files: "OrderedDict[int, weakref.ref]" = OrderedDict()
_open_lock = threading.Lock()


class _SafetensorsFile:
    """One safetensors file whose header is parsed once: the ``safe_open`` handle is kept and
    serves every tensor read. At most :data:`MAX_OPEN_FILES` handles stay open process-wide;
    the least recently used one is closed and reopened (header parsed again) when needed."""

    def __init__(self, path: Path, handle=None):
        self.path = path
        self._handle = None
        if handle is not None:
            with _open_lock:
                self._keep(handle)

    def _keep(self, handle) -> None:  # with _open_lock held
        self._handle = handle
        _open_files[id(self)] = weakref.ref(self)
        for key, ref in list(_open_files.items()):
            if len(_open_files) <= MAX_OPEN_FILES:
                break
            other = ref()
            if other is None or other is not self:
                del _open_files[key]
                if other is not None:
                    other._handle = None

    def get_tensor(self, name: str) -> torch.Tensor:
        with _open_lock:
            handle = self._handle
            if handle is None:
                handle = _safe_open(self.path)
                self._keep(handle)
            else:
                _open_files.move_to_end(id(self))
        try:
            tensor = handle.get_tensor(name)
        except Exception as e:  # noqa: BLE001 - e.g. the file was truncated after it was opened
            raise CorruptCheckpointError(_corrupt_message(self.path, e)) from e
        register_file_pages(tensor)  # a view into the file's private mapping: passes may release its pages
        return tensor


def _safetensors_entries(path: Path) -> list[TensorEntry]:
    require_regular_file(path)
    handle = _safe_open(path)
    try:
        names = list(handle.keys())
        info = {}
        for n in names:
            s = handle.get_slice(n)
            info[n] = (tuple(s.get_shape()), s.get_dtype())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CorruptCheckpointError(_corrupt_message(path, e)) from e
    file = _SafetensorsFile(path, handle)

    entries = []
    for n in order_names(names):
        shape, raw_dtype = info[n]
        dtype = _SAFETENSORS_DTYPES.get(raw_dtype)
        load = (lambda n=n: file.get_tensor(n))
        if dtype is None:  # a dtype torch cannot hold: reported, never read
            reason = f"dtype {raw_dtype} is not supported by graphnn (not read)"
            entries.append(TensorEntry(n, shape, None, load, value=f"unsupported dtype {raw_dtype}", skip_reason=reason))
        else:
            entries.append(TensorEntry(n, shape, dtype, load, skip_reason=empty_skip_reason(shape)))
    return entries


@dataclass(frozen=True)
class SafetensorsHeader:
    """The header of a safetensors file, read without its data: ``data_start`` is the file offset
    of the data section (8 + header length), ``tensors`` maps each name to ``(dtype, shape,
    start, end)`` (the raw dtype string, and byte offsets relative to ``data_start``), in the
    order of the data; ``metadata`` is the ``__metadata__`` object (strings to strings)."""

    data_start: int
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]
    metadata: dict[str, str]


def safetensors_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and check a safetensors header (the first ``8 + n`` bytes only; no tensor data is
    read or mapped): the header length lies within the file, the JSON is an object whose entries
    have a dtype, a shape and ``data_offsets`` that tile the data section exactly and match each
    shape's size. Anything else is a :class:`CorruptCheckpointError`."""
    path = Path(path)
    size = require_regular_file(path).st_size

    def bad(what: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(_corrupt_message(path, f"its safetensors header {what}"))

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("is missing (the file is shorter than 8 bytes; truncated?)")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > MAX_INDEX_BYTES * 4:
            raise bad(f"claims {n:,} bytes, more than the file holds (truncated?)")
        raw = f.read(n)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise bad(f"is not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise bad("is not a JSON object")
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("has a __metadata__ that is not an object of strings")
    tensors = {}
    for name, info in doc.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
            start, end = int(start), int(end)
        except (TypeError, KeyError, ValueError) as e:
            raise bad(f"has a malformed entry for {name!r} ({e!r})") from e
        width = _DTYPE_BYTES.get(dtype)
        numel = 1
        for d in shape:
            numel *= d
        if min(shape, default=0) < 0 or start < 0 or end < start or (width is not None and end - start != numel * width):
            raise bad(f"gives {name!r} dtype {dtype!r}, shape {list(shape)} and {end - start} bytes, which disagree")
        tensors[name] = (dtype, shape, start, end)
    ordered = dict(sorted(tensors.items(), key=lambda kv: (kv[1][2], kv[1][3])))
    pos = 0
    for name, (_, _, start, end) in ordered.items():
        if start != pos:
            raise bad(f"leaves a gap or an overlap at byte {pos} of the data (at {name!r})")
        pos = end
    if 8 + n + pos != size:
        raise bad(f"covers {pos:,} data bytes but the file holds {size - 8 - n:,} (truncated or padded)")
    return SafetensorsHeader(8 + n, ordered, dict(metadata))


#: Bytes per element of each safetensors dtype.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def read_tensor(path: str | os.PathLike, header: SafetensorsHeader, name: str) -> torch.Tensor:
    """Tensor ``name`` of a safetensors file read with plain ``pread`` calls into a fresh tensor
    (its own memory: writable, no memory map, nothing of the file stays mapped afterwards)."""
    raw, shape, start, end = header.tensors[name]
    dtype = _SAFETENSORS_DTYPES.get(raw)
    if dtype is None or sys.byteorder != "little":  # the library converts byte order and odd dtypes
        with _safe_open(Path(path)) as f:
            return f.get_tensor(name).clone()
    out = torch.empty(shape, dtype=dtype)
    view = memoryview(out.reshape(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], header.data_start + start + done)
            if got <= 0:
                raise CorruptCheckpointError(_corrupt_message(Path(path), f"it ends inside tensor {name!r} (truncated?)"))
            done += got
    finally:
        os.close(fd)
    return out


def write_safetensors_like(source: str | os.PathLike, dest: str | os.PathLike, replaced: Mapping[str, torch.Tensor],
                           metadata: Mapping[str, str] | None = None,
                           header: SafetensorsHeader | None = None) -> None:
    """Write ``dest`` as a copy of the safetensors file ``source`` in which the tensors in
    ``replaced`` (same dtype and shape as stored) take new values, streamed: the other tensors'
    bytes are copied file to file (``copy_file_range``/``sendfile`` where the kernel has them) and
    the replaced ones written from their own memory, so no tensor is copied in memory. The layout
    (names, order, offsets) is the source's; ``metadata`` replaces the ``__metadata__``;
    ``header``: ``source``'s :func:`safetensors_header`, when the caller has parsed it already.
    Not atomic: write to a temporary name (see :func:`graphnn.atomic.atomic_write`)."""
    if header is None:
        header = safetensors_header(source)
    for name, t in replaced.items():
        raw, shape, _, _ = header.tensors[name]
        if tuple(t.shape) != shape or t.dtype != _SAFETENSORS_DTYPES.get(raw):
            raise ValueError(f"{name}: a {t.dtype} {tuple(t.shape)} tensor cannot replace the stored {raw} {list(shape)}")
    doc: dict[str, Any] = {}
    meta = dict(header.metadata if metadata is None else metadata)
    if meta:
        doc["__metadata__"] = meta
    for name, (raw, shape, start, end) in header.tensors.items():
        doc[name] = {"dtype": raw, "shape": list(shape), "data_offsets": [start, end]}
    blob = json.dumps(doc, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(source, "rb") as src, open(dest, "wb") as out:
        out.write(len(blob).to_bytes(8, "little"))
        out.write(blob)
        out.flush()
        for name, (_, _, start, end) in header.tensors.items():
            if name in replaced:
                t = replaced[name].detach().contiguous().cpu()
                if t.numel():
                    out.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
                out.flush()
            else:
                _copy_range(src, out, header.data_start + start, end - start)


def _copy_range(src, out, offset: int, count: int) -> None:
    """Copy ``count`` bytes of ``src`` from ``offset`` to the current end of ``out`` (both open
    binary files; ``out`` flushed), in the kernel where possible, else 16 MiB at a time."""
    pos = out.tell()
    copy_range = getattr(os, "copy_file_range", None)
    while count > 0:
        try:
            if copy_range is None:
                raise OSError
            n = copy_range(src.fileno(), out.fileno(), min(count, 1 << 30), offset, pos)
        except OSError:
            copy_range = None
            src.seek(offset)
            out.seek(pos)
            n = out.write(src.read(min(count, 16 << 20)))
            out.flush()
        if n <= 0:
            raise CorruptCheckpointError(_corrupt_message(Path(src.name), "it ended while being copied (truncated?)"))
        offset, pos, count = offset + n, pos + n, count - n
    out.seek(pos)


def _pickle_entries(path: Path, trust: bool) -> list[TensorEntry]:
    sd = unwrap_state_dict(torch_load(path, trust=trust), str(path))
    register_file_pages(*(v for v in sd.values() if isinstance(v, torch.Tensor)))  # mmap=True: views of the file
    return entries_from_state_dict(sd)


def _file_entries(path: Path, trust: bool) -> list[TensorEntry]:
    require_regular_file(path)
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


class _JSONObject(dict):
    """A JSON object that remembers keys given more than once (``json`` keeps the last)."""

    repeated: list[tuple[str, Any, Any]]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> "_JSONObject":
        obj = cls()
        obj.repeated = []
        for key, value in pairs:
            if key in obj:
                obj.repeated.append((key, obj[key], value))
            obj[key] = value
        return obj


_INDEX_ADVICE = ("Re-download the index file, or write it again (transformers' save_pretrained writes "
                 "it): it must be a JSON object whose 'weight_map' maps every tensor name to its shard "
                 "file name, e.g. {\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}.")


def read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index file (tensor name -> shard file name),
    validated: raises :class:`CorruptCheckpointError` saying what is wrong and what to do."""
    st = require_regular_file(index, "index file")
    if st.st_size > MAX_INDEX_BYTES:
        raise CorruptCheckpointError(f"{index} is {st.st_size:,} bytes, more than any real index file "
                                     f"({MAX_INDEX_BYTES:,} bytes at most). {_INDEX_ADVICE}")

    def bad(what: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{index} is not a valid index file: {what}. {_INDEX_ADVICE}")

    try:
        doc = json.loads(index.read_bytes(), object_pairs_hook=_JSONObject.from_pairs)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(f"it is not JSON ({e})") from e
    except OSError as e:
        raise CorruptCheckpointError(f"cannot read {index}: {e}") from e
    if not isinstance(doc, dict):
        raise bad(f"its top level is a {_json_type(doc)}, not an object")
    if "weight_map" not in doc:
        raise bad(f"it has no 'weight_map' key (keys: {', '.join(map(repr, list(doc)[:5])) or 'none'})")
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict):
        raise bad(f"its 'weight_map' is a {_json_type(weight_map)}, not an object")
    if not weight_map:
        raise bad("its 'weight_map' is empty")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise bad(f"its 'weight_map' maps {name!r} to {shard!r} (a {_json_type(shard)}), not to a shard file name")
    for name, first, later in getattr(weight_map, "repeated", []):
        if first != later:
            raise bad(f"its 'weight_map' lists {name!r} twice, mapped to {first!r} and to {later!r}, so "
                      "which copy is meant is unknown")
    return dict(weight_map)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _allowed_roots(folder: Path) -> list[Path]:
    """Where the files of a model folder may live, symlinks followed: the folder itself, and for
    a Hugging Face cache snapshot (``<repo>/snapshots/<revision>``) the repository's ``blobs``."""
    real = folder.resolve()
    roots = [real]
    blobs = real.parent.parent / "blobs"
    if real.parent.name == "snapshots" and blobs.is_dir():
        roots.append(blobs.resolve())
    return roots


def member_path(folder: Path, name: str, listed_by: Path | None = None) -> Path:
    """``folder / name`` for a file of a model folder (``listed_by``: the index that names it),
    refused with :class:`CorruptCheckpointError` unless it stays inside the folder after
    following symlinks (see :func:`_allowed_roots`); absolute names and ``..`` are never followed."""
    rel = Path(name)
    advice = ("graphnn reads only files inside the folder it was given. The folder is damaged or "
              "hostile; re-download the model from a source you trust.")
    if rel.is_absolute() or ".." in rel.parts or rel.drive:
        raise CorruptCheckpointError(f"{listed_by} names the shard {name!r}, which is outside the model "
                                     f"folder {folder}: {advice}")
    full = folder / rel
    real = full.resolve()
    if not any(real == root or root in real.parents for root in _allowed_roots(folder)):
        what = f"{listed_by} names the shard {name!r}, a link to" if listed_by else f"{full} is a link to"
        raise CorruptCheckpointError(f"{what} {real}, outside the model folder {folder}: {advice}")
    return full


def _indexed_entries(folder: Path, index: Path, trust: bool) -> list[TensorEntry]:
    weight_map = read_index(index)
    files: dict[str, tuple[str, dict[str, TensorEntry]]] = {}  # real path -> (shard name, entries)
    file_of: dict[str, str] = {}  # shard name as the index spells it -> real path
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = member_path(folder, shard, index)
        if not shard_path.exists():
            raise CorruptCheckpointError(
                f"{index} lists shard {shard!r}, which is missing from {folder}; the download is incomplete"
            )
        real = os.path.realpath(shard_path)
        if real not in files:
            files[real] = (shard, {e.name: e for e in _file_entries(shard_path, trust)})
        file_of[shard] = real

    holders: dict[str, list[str]] = {}
    for shard, held in files.values():
        for name in held:
            holders.setdefault(name, []).append(shard)
    entries = []
    for name in order_names(list(weight_map)):
        shard, held = files[file_of[weight_map[name]]]
        if name not in held:
            raise CorruptCheckpointError(f"{index} maps {name!r} to {weight_map[name]!r}, which does not hold it")
        entries.append(held[name])

    doubled = {n: s for n, s in holders.items() if len(s) > 1 and n in weight_map}
    if doubled:
        shown = "; ".join(f"{n!r} in {', '.join(s)} (used: {files[file_of[weight_map[n]]][0]})"
                          for n, s in list(doubled.items())[:5])
        warnings.warn(f"{folder}: {len(doubled)} tensor(s) are stored in more than one shard; each is read "
                      f"from the shard {index.name} names: {shown}{' ...' if len(doubled) > 5 else ''}",
                      CheckpointWarning, stacklevel=4)
    unlisted = [n for n in holders if n not in weight_map]
    if unlisted:
        shown = ", ".join(f"{n!r} ({holders[n][0]})" for n in unlisted[:5])
        warnings.warn(f"{folder}: {len(unlisted)} tensor(s) stored in the shards are not listed in {index.name} "
                      f"and are ignored: {shown}{' ...' if len(unlisted) > 5 else ''}; a complete index lists "
                      "every tensor", CheckpointWarning, stacklevel=4)
    return entries


def _folder_entries(path: Path, trust: bool) -> list[TensorEntry]:
    for index_name in INDEX_FILES:
        index = path / index_name
        if os.path.lexists(index):
            return _indexed_entries(path, member_path(path, index_name), trust)
    for single in SINGLE_FILES:
        if os.path.lexists(path / single):
            return _file_entries(member_path(path, single), trust)
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
