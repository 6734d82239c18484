"""The one validation layer: small checks of option values shared by the library and the CLI.

Each function returns the (normalised) value when it is usable and otherwise raises
:class:`graphnn.errors.InvalidParameterError` (a ``ValueError`` subclass; the CLI maps it to exit
code 2) with a message that names the option, shows the bad value and says what to pass instead.
:func:`check_output` guards output paths (never an input; an existing one only when asked) and
raises :class:`graphnn.errors.RefusedOverwriteError` (also exit 2 on the command line).
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import InvalidParameterError

__all__ = ["check_choice", "check_number", "check_seed", "check_bool", "check_device", "check_output"]

#: Device types graphnn computes on (analyses use float64, which rules out e.g. ``mps``).
DEVICE_TYPES = ("cpu", "cuda")


def _options(choices: Iterable[Any]) -> str:
    """``'a', 'b' or 'c'``."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared with ``==``), else a usage error listing them."""
    choices = tuple(choices)
    try:
        ok = any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)
    except Exception:  # noqa: BLE001 - a value whose == fails is not a valid choice
        ok = False
    if not ok:
        raise InvalidParameterError(f"{name} must be one of {_options(choices)}, not {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (numpy booleans accepted), else a usage error."""
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"):  # numpy.bool_, without importing numpy
        return bool(value)
    raise InvalidParameterError(f"{name} must be True or False, not {value!r}")


def check_number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    allow_none: bool = False,
) -> Any:
    """Check a real number and return it (as a Python ``int`` when ``integer=True``).

    ``positive``: > 0; ``nonnegative``: >= 0; ``finite``: not NaN or ±inf (NaN is refused even
    with ``finite=False``: it compares false with every bound); ``integer``: an ``int`` (a float
    such as ``3.0`` is refused); ``low``/``high``: inclusive bounds; ``allow_none``: ``None``
    passes through. Booleans, strings and tensors are refused. The message reads e.g.
    ``gamma must be a finite number with 0 <= gamma, not inf``.
    """
    if value is None and allow_none:
        return None
    want = _wanted(name, integer, finite, positive, nonnegative, low, high) + (" or None" if allow_none else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(f"{name} must be {want}, not {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise InvalidParameterError(f"{name} must be {want}, not {value!r}")
    if integer:
        value = int(value)
    x = float(value)
    bad = (math.isnan(x) or (finite and math.isinf(x))
           or (positive and not x > 0) or (nonnegative and not x >= 0)
           or (low is not None and not x >= low) or (high is not None and not x <= high))
    if bad:
        raise InvalidParameterError(f"{name} must be {want}, not {value!r}")
    return value


def _wanted(name: str, integer: bool, finite: bool, positive: bool, nonnegative: bool, low, high) -> str:
    """``a positive integer``, ``a finite number with 0 < top <= 1``, ..."""
    noun = "integer" if integer else "number"
    adjective = "finite " if finite and not integer else ""
    if low is None and high is None and (positive or nonnegative):
        sign = "positive " if positive else "non-negative "
        return f"a {sign}{adjective}{noun}"
    lower = "0 < " if positive else ("0 <= " if nonnegative else "")
    if low is not None and not (positive and low <= 0) and not (nonnegative and low <= 0):
        lower = f"{low} <= "
    upper = f" <= {high}" if high is not None else ""
    article = "an" if not adjective and integer else "a"
    if not lower and not upper:
        return f"{article} {adjective}{noun}"
    return f"{article} {adjective}{noun} with {lower}{name}{upper}"


def check_seed(name: str, value: Any) -> int | None:
    """A random seed: ``None`` (fresh OS entropy) or an integer >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidParameterError(f"{name} must be a non-negative integer, or None for a random seed; "
                                    f"not {value!r}")
    return int(value)


def check_device(device: Any = "auto", *, name: str = "device"):
    """The one device check; returns a ``torch.device``.

    ``"auto"`` (or ``None``) -> the first CUDA device when CUDA is available, else the CPU.
    Otherwise a string or ``torch.device`` of type ``cpu`` or ``cuda[:i]``. A name torch does not
    know, another device type, CUDA asked for where it is not available, or a CUDA index beyond the
    visible devices is a usage error.
    """
    import torch

    cuda_ok = torch.cuda.is_available()
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if cuda_ok else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise InvalidParameterError(f"{name}={device!r}: give 'auto', 'cpu', 'cuda' or 'cuda:<index>' "
                                    "(a string or a torch.device)")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidParameterError(f"{name}={device!r} is not a device: use 'auto', 'cpu', 'cuda' "
                                    "or 'cuda:<index>'") from None
    if dev.type not in DEVICE_TYPES:
        raise InvalidParameterError(f"{name}={device!r}: graphnn computes on 'cpu' or 'cuda' only; "
                                    "use 'auto', 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not cuda_ok:
            raise InvalidParameterError(f"{name}={device!r} asks for CUDA, but CUDA is not available on "
                                        "this machine: use 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidParameterError(f"{name}={device!r}: this machine has {count} CUDA device(s) "
                                        f"(indices 0..{count - 1}); use 'cuda' or a valid index")
    return dev


def _inside(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or below it (both already resolved)."""
    return os.path.commonpath([path, folder]) == folder


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    overwrite: bool = False,
    kind: str = "file",
    name: str = "output",
    overwrite_hint: str = "overwrite=True",
) -> Path:
    """Check an output path against the inputs of the same call and the policy for existing
    outputs; returns it as a ``Path``.

    Refused with :class:`~graphnn.errors.RefusedOverwriteError` (never replaced, whatever
    ``overwrite`` says): an output that *is* an input, by path or by file identity (``st_dev`` and
    ``st_ino``: symlinks and hard links), an existing output inside an input folder (one of its
    files), and for ``kind="folder"`` an output folder that contains an input. Refused unless
    ``overwrite``: an output that already exists. A folder where a file is expected (or a file
    where a folder is), or an existing device, FIFO or socket, is an :class:`InvalidParameterError`. ``overwrite_hint`` is how the
    message names the opt-in (``--overwrite`` on the command line).
    """
    from .errors import RefusedOverwriteError

    check_choice("kind", kind, ("file", "folder"))
    out = Path(path)
    out_real = os.path.realpath(out)
    exists = os.path.lexists(out)
    out_stat = None
    if exists:
        try:
            out_stat = os.stat(out)
        except OSError:  # a dangling symlink: it is no input
            out_stat = None
    for src in inputs:
        src = Path(src)
        if not os.path.lexists(src):
            continue
        src_real = os.path.realpath(src)
        same = out_real == src_real
        if not same and out_stat is not None:
            try:
                st = os.stat(src)
                same = (st.st_dev, st.st_ino) == (out_stat.st_dev, out_stat.st_ino)
            except OSError:
                pass
        if same:
            raise RefusedOverwriteError(f"{name} {out} is the input {src}: graphnn never writes over its input; "
                                        "choose another path")
        if os.path.isdir(src_real) and exists and _inside(out_real, src_real):
            raise RefusedOverwriteError(f"{name} {out} is a file of the input folder {src}: graphnn never "
                                        "writes over its input; choose a path outside that folder")
        if kind == "folder" and _inside(src_real, out_real):
            raise RefusedOverwriteError(f"{name} folder {out} contains the input {src}: writing it would "
                                        "replace the input; choose a folder outside it")
    if exists and out_stat is not None:
        import stat as _stat

        is_dir = _stat.S_ISDIR(out_stat.st_mode)
        if not is_dir and not _stat.S_ISREG(out_stat.st_mode):
            raise InvalidParameterError(f"{name} {out} is not a regular file (a device, FIFO or socket): give "
                                        "the path of a file (on the command line, leave -o out to print to stdout)")
        if kind == "file" and is_dir:
            raise InvalidParameterError(f"{name} {out} is a folder: give the name of a file to write")
        if kind == "folder" and not is_dir:
            raise InvalidParameterError(f"{name} {out} is a file: give the name of a folder to create")
    if exists and not overwrite:
        raise RefusedOverwriteError(f"{name} {out} already exists: graphnn does not replace existing outputs "
                                    f"unless asked ({overwrite_hint}); choose another path or pass {overwrite_hint}")
    return out
