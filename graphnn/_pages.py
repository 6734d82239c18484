"""Give back the resident pages of memory-mapped checkpoint tensors (Linux; a no-op elsewhere).

A safetensors file opened with ``safe_open(..., framework="pt")`` (and a zip checkpoint read with
``torch.load(mmap=True)``) is mapped *privately*; its tensors are views into the mapping, and every
page a pass reads stays resident, so a process's RSS grows to the size of the checkpoint even
though those pages are clean copies of the file. This module drops them again after a pass.

API
---
``register(*tensors) -> int``
    Called by extraction (``graphnn.extract.checkpoints``) for tensors it read from a file.
    A tensor is recorded only if its storage lies inside a file-backed mapping of this process
    (``/proc/self/maps``, read again only for a mapping not seen yet or no longer holding a live
    registered tensor); returns how many were recorded. Entries are keyed by the storage's data
    pointer and hold a weak reference to it, so a freed storage is never advised.
``release_pages(t) -> int``
    ``madvise(MADV_DONTNEED)`` on the page-aligned range spanned by ``t`` (a CPU tensor, a view of
    one, or a numpy array sharing its memory) if it lies in a registered storage; returns the
    bytes of the page runs advised (pages that were not resident included). The range is widened
    to whole pages, which stay inside the same file mapping. Anything else (heap memory, CUDA, unregistered, non-Linux, no libc) returns 0.
    Data is never lost: the page tables are looked at first and only runs of pages that are
    *file pages* or *not present and not swapped* are advised; a page the process has written
    (copy-on-write made it anonymous) or that is swapped stays. The look is one
    ``PAGEMAP_SCAN`` ioctl on ``/proc/self/pagemap`` (Linux 6.7+) that returns only the runs of
    pages that must stay (present and not file-backed, or swapped): nothing per page comes back
    to Python, ~10x cheaper than reading the 8-byte pagemap entry of every page, which is what
    is done where the ioctl is missing (bits 63 present, 62 swapped, 61 file page). If neither
    works, nothing is released. The next read of a released page faults it in again from the
    page cache (or the disk), with the file's bytes.
``resident_file_bytes(t) -> int``
    Bytes of ``t``'s span whose pages are present and file-backed (for tests and logs).

``GRAPHNN_PAGE_RELEASE=0`` in the environment (read once) switches releasing off, for A/B
measurements.

Caveat: between reading pagemap and ``madvise`` another thread that writes into a released page
would lose that write; graphnn's passes only read the weights. Writing into mapped weights while a
pass runs in another thread is not supported.
"""
from __future__ import annotations

import bisect
import ctypes
import os
import sys
import threading

import numpy as np

_MADV_DONTNEED = 4  # Linux (x86, arm, riscv, ...)
_PRESENT = np.uint64(1 << 63)
_SWAPPED = np.uint64(1 << 62)
_FILE = np.uint64(1 << 61)
_PAGEMAP = "/proc/self/pagemap"  # 8 bytes per virtual page (kernel: admin-guide/mm/pagemap.rst)
# PAGEMAP_SCAN (include/uapi/linux/fs.h): page categories and the ioctl's argument and result rows
_PAGE_IS_FILE, _PAGE_IS_PRESENT, _PAGE_IS_SWAPPED = 1 << 2, 1 << 3, 1 << 4
_SCAN_REGIONS = 256  # result rows per ioctl (a longer answer is asked for again from where it ended)


class _ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


_PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_ScanArg) << 16) | (ord("f") << 8) | 16  # _IOWR('f', 16, ...)
#: whether the ioctl works here (None: not tried yet)
_scan_works: bool | None = None

_lock = threading.Lock()
_starts: list[int] = []            # sorted start addresses of registered storages
_entries: dict[int, tuple[int, list]] = {}   # start -> (end, weak references to the live storages)
_mapped: set[tuple[int, int]] = set()      # file mappings (start, end) that registered storages lie in
_libc = None
_page = 0


def _setup() -> bool:
    """Whether releasing can work here (Linux, libc with madvise, /proc/self/pagemap)."""
    global _libc, _page
    if _libc is False:
        return False
    if _libc is not None:
        return True
    try:
        if not sys.platform.startswith("linux") or not os.path.exists(_PAGEMAP):
            raise OSError("not Linux")
        if os.environ.get("GRAPHNN_PAGE_RELEASE", "1") == "0":
            raise OSError("switched off")
        lib = ctypes.CDLL(None, use_errno=True)
        lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.madvise.restype = ctypes.c_int
        lib.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        lib.ioctl.restype = ctypes.c_int
        _page = os.sysconf("SC_PAGE_SIZE")
        _libc = lib
        return True
    except (OSError, AttributeError, ValueError):
        _libc = False
        return False


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings that are backed by a regular file."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or not parts[5].startswith("/"):
                    continue  # anonymous, [heap], [stack], ...
                lo, hi = parts[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return out


def _storage_weakref(storage):
    try:
        from torch.multiprocessing.reductions import StorageWeakRef
        return StorageWeakRef(storage)
    except Exception:  # noqa: BLE001 - no weak reference: the tensor is not registered
        return None


def _in_live_mapping(start: int, n: int) -> bool:
    """Whether [start, start + n) lies in a file mapping seen in /proc/self/maps that still holds
    a live registered storage. A storage keeps its whole mapping mapped (safetensors and
    ``torch.load(mmap=True)`` unmap a file only when no tensor uses it), so such a range is
    current and /proc/self/maps need not be read again for the file's other tensors."""
    with _lock:
        for lo, hi in _mapped:
            if not (lo <= start and start + n <= hi):
                continue
            i = bisect.bisect_left(_starts, lo)
            while i < len(_starts) and _starts[i] < hi:
                if any(not r.expired() for r in _entries[_starts[i]][1]):
                    return True
                i += 1
    return False


def register(*tensors) -> int:
    """Record CPU tensors whose storage lies in a file-backed mapping (see the module docstring)."""
    if not tensors or not _setup():
        return 0
    maps = None
    count = 0
    for t in tensors:
        try:
            if t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            start, n = storage.data_ptr(), storage.nbytes()
        except (AttributeError, RuntimeError):
            continue
        if n <= 0:
            continue
        if not _in_live_mapping(start, n):
            if maps is None:
                maps = _file_mappings()
                with _lock:  # keep the known ranges that still exist
                    _mapped.intersection_update(maps)
            hit = next(((lo, hi) for lo, hi in maps if lo <= start and start + n <= hi), None)
            if hit is None:
                continue
            with _lock:
                _mapped.add(hit)
        ref = _storage_weakref(storage)
        if ref is None:
            continue
        with _lock:
            entry = _entries.get(start)
            if entry is None:
                bisect.insort(_starts, start)
                _entries[start] = (start + n, [ref])
            else:  # the same bytes read again (a new storage object over the same mapping)
                refs = [r for r in entry[1] if not r.expired()]
                if not any(r == ref for r in refs):
                    refs.append(ref)
                _entries[start] = (max(entry[0], start + n) if refs[:-1] else start + n, refs)
        count += 1
    return count


def _extent(shape, strides) -> tuple[int, int]:
    """(lowest, highest) element offset, in strides' units, that an array of ``shape`` reaches."""
    lo = hi = 0
    for size, stride in zip(shape, strides):
        if stride > 0:
            hi += (size - 1) * stride
        else:
            lo += (size - 1) * stride
    return lo, hi


def _span(t) -> tuple[int, int] | None:
    """(address, bytes) of the memory a CPU tensor or numpy array spans; None if not applicable."""
    if isinstance(t, np.ndarray):
        if t.size == 0:
            return None
        lo, hi = _extent(t.shape, t.strides)  # numpy strides are in bytes
        return t.__array_interface__["data"][0] + lo, hi - lo + t.itemsize
    try:
        if t.device.type != "cpu" or t.numel() == 0 or t.is_sparse:
            return None
        item = t.element_size()
        lo, hi = _extent(t.shape, t.stride())  # torch strides are in elements
        return t.data_ptr() + lo * item, (hi - lo + 1) * item
    except (AttributeError, RuntimeError):
        return None


def _page_range(t) -> tuple[int, int, int, int] | None:
    """``(addr, bytes, first page, end page)`` of ``t``'s span (end exclusive), or None where
    release cannot work here or ``t`` spans no CPU memory."""
    if t is None or not _setup():
        return None
    span = _span(t)
    if span is None:
        return None
    addr, n = span
    return addr, n, addr // _page, -(-(addr + n) // _page)


def _registered_range(addr: int, n: int) -> tuple[int, int] | None:
    """The registered storage range holding [addr, addr + n), if its storage is still alive."""
    with _lock:
        i = bisect.bisect_right(_starts, addr) - 1
        if i < 0:
            return None
        start = _starts[i]
        end, refs = _entries[start]
        refs[:] = [r for r in refs if not r.expired()]
        if not refs:
            del _entries[start]
            _starts.pop(i)
            return None
        if addr + n > end:
            return None
        return start, end


def _page_flags(first_page: int, count: int) -> np.ndarray | None:
    """The /proc/self/pagemap entries (uint64 flags) of ``count`` pages from ``first_page``;
    None if they cannot be read whole."""
    try:
        with open(_PAGEMAP, "rb", buffering=0) as f:
            f.seek(first_page * 8)
            raw = bytearray(count * 8)
            view, got = memoryview(raw), 0
            while got < len(raw):
                k = f.readinto(view[got:])
                if not k:
                    return None
                got += k
    except OSError:
        return None
    return np.frombuffer(raw, dtype=np.uint64)


def _kept_runs_scan(first_page: int, count: int) -> list[tuple[int, int]] | None:
    """Runs (first page, pages) of [first_page, first_page + count) that must not be advised:
    present and not file-backed (written copy-on-write pages), or swapped; from ``PAGEMAP_SCAN``
    (the kernel walks the page tables and returns only those runs). None if the ioctl does not
    work here (older kernel) or fails."""
    global _scan_works
    if _scan_works is False:
        return None
    try:
        fd = os.open(_PAGEMAP, os.O_RDONLY)  # per call: an fd would see the opener's pages after a fork
    except OSError:
        return None
    kept: list[tuple[int, int]] = []
    try:
        vec = (_Region * _SCAN_REGIONS)()
        start, end = first_page * _page, (first_page + count) * _page
        while start < end:
            arg = _ScanArg(ctypes.sizeof(_ScanArg), 0, start, end, 0, ctypes.addressof(vec), _SCAN_REGIONS, 0,
                           _PAGE_IS_FILE, _PAGE_IS_FILE,  # not a file page ...
                           _PAGE_IS_PRESENT | _PAGE_IS_SWAPPED,  # ... and present or swapped
                           _PAGE_IS_PRESENT | _PAGE_IS_SWAPPED)
            got = _libc.ioctl(fd, _PAGEMAP_SCAN, ctypes.addressof(arg))
            if got < 0:
                _scan_works = False if _scan_works is None else _scan_works
                return None
            _scan_works = True
            for r in vec[:got]:
                kept.append((r.start // _page, (r.end - r.start) // _page))
            if arg.walk_end <= start:
                return None
            start = arg.walk_end
    finally:
        os.close(fd)
    return kept


def _releasable_runs(first_page: int, count: int) -> list[tuple[int, int]] | None:
    """Runs (first page, pages) of [first_page, first_page + count) that are file pages or absent
    and not swapped: the gaps between :func:`_kept_runs_scan`'s runs, or, where that does not work,
    read from /proc/self/pagemap; None if neither can be read."""
    kept = _kept_runs_scan(first_page, count)
    if kept is not None:
        runs, at = [], first_page
        for p, k in kept:
            if p > at:
                runs.append((at, p - at))
            at = max(at, p + k)
        if at < first_page + count:
            runs.append((at, first_page + count - at))
        return runs
    flags = _page_flags(first_page, count)
    if flags is None:
        return None
    present = (flags & _PRESENT) != 0
    ok = np.where(present, (flags & _FILE) != 0, (flags & _SWAPPED) == 0)
    if ok.all():
        return [(first_page, count)]
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
    return [(first_page + int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def release_pages(t) -> int:
    """Drop the resident pages of a registered file-mapped tensor's span; the bytes released."""
    pages = _page_range(t)
    if pages is None:
        return 0
    addr, n, first, last = pages  # the storage's pages all lie in its file mapping
    if _registered_range(addr, n) is None:
        return 0
    runs = _releasable_runs(first, last - first)
    if runs is None:
        return 0
    released = 0
    for p, k in runs:
        if _libc.madvise(p * _page, k * _page, _MADV_DONTNEED) == 0:
            released += k * _page
    return released


def resident_file_bytes(t) -> int:
    """Bytes of the pages spanned by ``t`` that are present and file-backed (0 if unknown)."""
    pages = _page_range(t)
    flags = None if pages is None else _page_flags(pages[2], pages[3] - pages[2])
    if flags is None:
        return 0
    return int((((flags & _PRESENT) != 0) & ((flags & _FILE) != 0)).sum()) * _page


def is_registered(t) -> bool:
    """Whether ``t`` lies in a registered (file-mapped, live) storage."""
    span = _span(t)
    return span is not None and _registered_range(*span) is not None
