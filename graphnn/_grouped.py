"""The diagonal groups of a grouped (block-diagonal) matrix, as a ``(groups, rows, cols)`` view.

A grouped or depthwise convolution joins group ``k`` of its inputs only to group ``k`` of its
outputs: its ``n_rows x n_cols`` matrix is zero outside ``groups`` equal consecutive diagonal
blocks of ``r = n_rows / groups`` rows and ``c = n_cols / groups`` columns. Block ``k`` is
``matrix[k*r:(k+1)*r, k*c:(k+1)*c]``. :func:`group_diagonal` gives all of them at once as a
``(groups, r, c)`` view (no copy, no mask), :func:`set_group_diagonal_` writes them, and
:func:`from_group_diagonal` builds the zero-filled matrix from them. Both torch tensors and
numpy arrays are accepted (numpy's view is read-only).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Matrix = TypeVar("Matrix", torch.Tensor, np.ndarray)


def group_shape(n_rows: int, n_cols: int, groups: int) -> tuple[int, int]:
    """``(r, c)``, the rows and columns of one diagonal group; ``ValueError`` when ``groups``
    does not divide both sides (the groups would not be equal)."""
    if groups < 1 or n_rows % groups or n_cols % groups:
        raise ValueError(f"{groups} equal diagonal groups do not fit a {n_rows} x {n_cols} matrix")
    return n_rows // groups, n_cols // groups


def group_diagonal(matrix: Matrix, groups: int) -> Matrix:
    """The ``groups`` diagonal blocks of the 2-D ``matrix`` as a ``(groups, r, c)`` view:
    ``out[k, i, j] == matrix[k*r + i, k*c + j]``. Writing into the view (torch) writes into
    ``matrix``. ``matrix`` must be contiguous (a view of a strided copy would write nowhere)."""
    r, c = group_shape(matrix.shape[0], matrix.shape[1], groups)
    if isinstance(matrix, np.ndarray):
        if not matrix.flags.c_contiguous:
            raise ValueError("group_diagonal needs a C-contiguous array (np.ascontiguousarray first)")
        return matrix.reshape(groups, r, groups, c).diagonal(axis1=0, axis2=2).transpose(2, 0, 1)
    if not matrix.is_contiguous():
        raise ValueError("group_diagonal needs a contiguous tensor (.contiguous() first)")
    return matrix.view(groups, r, groups, c).diagonal(dim1=0, dim2=2).permute(2, 0, 1)


def set_group_diagonal_(matrix: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Copy ``blocks`` (``(groups, r, c)``) onto the diagonal groups of the contiguous
    ``matrix`` (``groups*r x groups*c``), in place; entries outside the groups are left as they
    are. Returns ``matrix``."""
    if blocks.dim() != 3:
        raise ValueError(f"blocks must be (groups, rows, cols), got shape {tuple(blocks.shape)}")
    g, r, c = blocks.shape
    if tuple(matrix.shape) != (g * r, g * c):
        raise ValueError(f"{g} groups of {r} x {c} do not make a {tuple(matrix.shape)} matrix")
    group_diagonal(matrix, g).copy_(blocks)
    return matrix


def from_group_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """The ``groups*r x groups*c`` block-diagonal matrix of ``blocks`` (``(groups, r, c)``),
    zero outside the diagonal groups, of ``blocks``' dtype and device."""
    g, r, c = blocks.shape
    return set_group_diagonal_(blocks.new_zeros(g * r, g * c), blocks)
