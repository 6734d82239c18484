"""The columns of a large 2-D CPU matrix as contiguous lines, made only when a peeling first needs them.

A block ``W`` is stored row-major, so the edges of a source neuron (a column) are strided: each
element of a bf16 column read from an 11008-row matrix sits on its own cache line, and reading
all columns one at a time moves ~32x the matrix's bytes. :class:`TransposedLines` holds the
transposed matrix ``W^T`` (``(m_src, m_dst)``, contiguous) instead, **in the matrix's own dtype**
(bf16 kept as its raw 16-bit patterns, fp16 as numpy float16: no float32 copy; float32 and float64
as they are: exact), built the first
time a line is asked for (:meth:`TransposedLines.get`), by torch's transposition (in square
tiles for the file). The signs are kept; the caller takes ``|w|`` on use.

Where it lives (the cost, stated): in memory (``m_src * m_dst * itemsize`` bytes of private
memory) while the shared :class:`MemoryBudget` allows; beyond it, in a temporary file of that
size created with :func:`tempfile.TemporaryFile` in the temporary directory (``TMPDIR``): on POSIX
the file is unlinked at creation, so it never outlives the process (error, ``KeyboardInterrupt``,
kill), and :meth:`close` frees its disk space at once. The file is written tile by tile with
``pwrite`` (a full disk raises, never ``SIGBUS``) and its lines are read back one at a time with
``pread`` (:class:`FileLines`): nothing is mapped, so the copy never counts in RSS (the kernel's
page cache holds what it can) and the file can always be closed. If the file cannot be written
(no space, no temporary directory), the lines are the strided view of ``W^T`` (slower, no extra
memory) and :attr:`spill_error` says why.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

#: Side of the square tiles a spilled copy is transposed in (256 x 256 x 2 B: in L2 on both sides);
#: each panel of ``TILE`` transposed rows is then written with one ``pwrite``.
TILE = 256

_INT_VIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class MemoryBudget:
    """Bytes of private memory the transposed copies of one peeling may take together."""

    def __init__(self, nbytes: int):
        self.left = int(nbytes)

    def take(self, nbytes: int) -> bool:
        if nbytes <= self.left:
            self.left -= nbytes
            return True
        return False


def numpy_bits(t: torch.Tensor, kind: np.dtype) -> np.ndarray:
    """A numpy view (no copy) of a CPU tensor's elements as ``kind`` (same item size): bf16 as
    ``uint16`` patterns, fp16 as ``float16``."""
    return t.view(_INT_VIEW[t.element_size()]).numpy().view(kind)


class FileLines:
    """Rows of a ``(rows, width)`` array of ``kind`` stored in an open file, read one at a time
    with ``pread`` into a reused buffer (``lines[i]`` is valid until the next read): nothing
    is mapped, so nothing of the file counts in the process's RSS, and closing the file always
    frees it."""

    def __init__(self, fd: int, shape: tuple[int, int], kind: np.dtype):
        self.fd, self.shape, self.dtype = fd, shape, np.dtype(kind)
        self.row_bytes = shape[1] * self.dtype.itemsize
        self.buf = np.empty(shape[1], dtype=self.dtype)
        self._view = memoryview(self.buf).cast("B")

    def __getitem__(self, i) -> np.ndarray:
        offset, done = int(i) * self.row_bytes, 0
        while done < self.row_bytes:
            got = os.preadv(self.fd, [self._view[done:]], offset + done) if hasattr(os, "preadv") else \
                _pread_into(self.fd, self._view[done:], offset + done)
            if got <= 0:
                raise OSError(f"the temporary file of transposed columns ended early (row {i})")
            done += got
        return self.buf


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


class TransposedLines:
    """The rows of ``mat.T`` (``mat``: a 2-D CPU tensor, ``(m_dst, m_src)``) as a contiguous numpy
    array of ``kind`` (the same item size as ``mat``), made on the first :meth:`get`."""

    def __init__(self, mat: torch.Tensor, kind: np.dtype, budget: MemoryBudget):
        self.mat = mat
        self.kind = self.dtype = np.dtype(kind)
        self.shape = (int(mat.shape[1]), int(mat.shape[0]))
        self.nbytes = mat.numel() * mat.element_size()
        self.budget = budget
        self.spilled = False
        self.spill_error: str | None = None
        #: the targets kept (indices into ``m_dst``) when the lines hold only some, else None
        self.targets: np.ndarray | None = None
        self._lines: np.ndarray | None = None
        self._src: torch.Tensor | None = None
        self._taken = 0
        self._file = None

    def get(self, alive: np.ndarray | None = None) -> np.ndarray:
        """The lines (built on the first call): ``(m_src, m_dst)``, or, when ``alive`` (a bool
        mask over the ``m_dst`` targets) keeps fewer than half of them, ``(m_src, k)`` with
        only the kept targets' entries, whose indices are then :attr:`targets`."""
        if self._lines is None:
            if alive is not None and 2 * int(np.count_nonzero(alive)) < alive.size:
                self.targets = np.flatnonzero(alive)
                self.shape = (self.shape[0], int(self.targets.size))
                self.nbytes = self.shape[0] * self.shape[1] * self.kind.itemsize
                self._src = self.mat.index_select(0, torch.from_numpy(self.targets))
            else:
                self._src = self.mat
            if self.budget.take(self.nbytes):
                self._lines = self._in_memory()
                self._taken = self.nbytes
            else:
                self._lines = self._in_file()
            self._src = None
        return self._lines

    def _panels(self, buf: torch.Tensor):
        """``(j0, j1, panel)``: rows ``j0:j1`` of ``mat.T`` in ``buf`` (``(rows, m_dst)``, int
        view), made from square tiles of ``TILE`` (each in cache on both sides)."""
        m_dst, m_src = self._src.shape
        src = self._src.view(_INT_VIEW[self._src.element_size()])
        for j0 in range(0, m_src, buf.shape[0]):
            j1 = min(m_src, j0 + buf.shape[0])
            panel = buf[:j1 - j0]
            for i0 in range(0, m_dst, TILE):
                panel[:, i0:i0 + TILE].copy_(src[i0:i0 + TILE, j0:j1].t())
            yield j0, j1, panel

    def _in_memory(self) -> np.ndarray:
        src = self._src.view(_INT_VIEW[self._src.element_size()])
        out = torch.empty(self.shape, dtype=src.dtype)
        out.copy_(src.t())  # torch's blocked transposition (a contiguous matrix: its fast path)
        return out.numpy().view(self.kind)

    def _in_file(self) -> np.ndarray:
        if self.nbytes == 0:
            return np.zeros(self.shape, dtype=self.kind)
        try:
            f = tempfile.TemporaryFile(prefix="graphnn-columns-")
        except OSError as e:
            return self._strided(f"no temporary file ({e})")
        try:
            fd = f.fileno()
            m_dst = self.shape[1]
            buf = torch.empty((min(self.shape[0], TILE), m_dst), dtype=_INT_VIEW[self.kind.itemsize])
            for j0, j1, panel in self._panels(buf):
                view = memoryview(panel.numpy()).cast("B")
                offset, done = j0 * m_dst * self.kind.itemsize, 0
                while done < len(view):
                    done += os.pwrite(fd, view[done:], offset + done)
        except (OSError, ValueError) as e:
            f.close()
            return self._strided(f"could not write the temporary file ({e})")
        self._file = f
        self.spilled = True
        return FileLines(fd, self.shape, self.kind)

    def _strided(self, why: str) -> np.ndarray:
        self.spill_error = why
        return numpy_bits(self._src, self.kind).T

    def close(self) -> None:
        """Free the copy (and the temporary file; its memory budget goes back). Lines handed out
        before must not be used after."""
        self._lines = None
        self.budget.left += self._taken
        self._taken = 0
        if self._file is not None:
            self._file.close()
            self._file = None
