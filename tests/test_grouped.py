"""graphnn._grouped: the diagonal groups of a block-diagonal matrix as a (groups, rows, cols) view.

Oracle: matrices built by hand with torch.block_diag and sliced block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphnn._grouped import from_group_diagonal, group_diagonal, group_shape, set_group_diagonal_
from graphnn.extract.builder import block_diagonal


def _blocks(g=3, r=2, c=4, seed=0):
    return torch.randn(g, r, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_view_reads_each_diagonal_block_of_a_hand_built_matrix():
    blocks = _blocks()
    m = torch.block_diag(*blocks) + 0.0
    m[0, -1] = 99.0  # off the diagonal groups: never read
    v = group_diagonal(m, 3)
    assert v.shape == (3, 2, 4)
    for k in range(3):
        assert torch.equal(v[k], m[2 * k:2 * k + 2, 4 * k:4 * k + 4])
        assert torch.equal(v[k], blocks[k])
    v[1, 0, 2] = -7.0  # a view: the write lands in the matrix
    assert m[2, 6] == -7.0


def test_writer_and_builder_give_the_hand_built_matrix():
    blocks = _blocks(g=4, r=3, c=1, seed=1)  # c = 1: a depthwise-like group shape
    expected = torch.block_diag(*blocks)
    assert torch.equal(from_group_diagonal(blocks), expected)
    m = torch.full(expected.shape, 5.0, dtype=torch.float64)
    out = set_group_diagonal_(m, blocks)
    assert out is m
    inside = expected != 0
    assert torch.equal(m[inside], expected[inside]) and (m[~inside] == 5.0).all()  # outside: untouched
    # the conv builder: values are n_rows x n_cols/groups, group k's rows side by side
    values = blocks.reshape(12, 1)
    assert torch.equal(block_diagonal(values, 12, 4, 4), expected)


def test_numpy_view_and_errors():
    blocks = _blocks(g=2, r=2, c=3).numpy()
    m = np.ascontiguousarray(torch.block_diag(*torch.from_numpy(blocks)).numpy())
    assert np.array_equal(group_diagonal(m, 2), blocks)
    with pytest.raises(ValueError, match="do not fit"):
        group_shape(6, 5, 2)
    with pytest.raises(ValueError, match="contiguous"):
        group_diagonal(torch.zeros(4, 6).T, 2)
    with pytest.raises(ValueError, match="do not make"):
        set_group_diagonal_(torch.zeros(4, 4), torch.zeros(2, 2, 3))
