"""The grouped-conv sites of graphnn.analyses._blocks (masked, AbsBlock's compact groups and its
dense transposed copy) read and write the diagonal groups through graphnn._grouped; the oracle
is the matrix masked by hand (entry (i, j) kept when row i and column j are in one group) and
the groups sliced out one by one."""

import pytest
import torch

import graphnn
from graphnn.analyses._blocks import AbsBlock, Weighting, _group_view, masked


def _grouped_blocks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(8, 16, 3, groups=4),             # (16, 8): 4 groups of 4 x 2
        torch.nn.Conv2d(16, 16, 3, groups=16),           # depthwise: 16 groups of 1 x 1
        torch.nn.ConvTranspose2d(16, 8, 3, groups=2),    # its matrix is a transposed view
        torch.nn.ConvTranspose2d(8, 12, 1, groups=4),
    )
    g = graphnn.extract(model)
    blocks = [b for b in g.blocks.values() if b.groups > 1]
    assert len(blocks) == 4
    return blocks


def _by_hand(b, m):
    """``m`` with the entries outside the diagonal groups zeroed, and the groups as a list."""
    g = b.groups
    r, c = m.shape[0] // g, m.shape[1] // g
    keep = (torch.arange(m.shape[0])[:, None] // r) == (torch.arange(m.shape[1])[None, :] // c)
    return m * keep, [m[k * r:(k + 1) * r, k * c:(k + 1) * c] for k in range(g)]


@pytest.mark.parametrize("i", range(4))
def test_masked_and_the_group_view_equal_the_hand_masked_matrix(i):
    b = _grouped_blocks()[i]
    m = b.matrix()
    expect, groups = _by_hand(b, m)
    assert torch.equal(masked(b, m), expect)
    view = _group_view(m, b.groups)
    assert torch.equal(view, torch.stack(groups))
    if m.is_contiguous() or m.t().is_contiguous():  # read in place, as the reshape view did before
        assert view.untyped_storage().data_ptr() == m.untyped_storage().data_ptr()
    if i >= 2:  # the ConvTranspose blocks exercise the transposed layout
        assert not m.is_contiguous() and m.t().is_contiguous()
    strided = torch.zeros(m.shape[0], 2 * m.shape[1], dtype=m.dtype)[:, ::2]
    strided.copy_(m)  # neither it nor its transpose is contiguous: a contiguous copy is read
    assert torch.equal(_group_view(strided, b.groups), torch.stack(groups))


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("i", range(4))
def test_abs_block_groups_and_dense_copy(i, copy):
    b = _grouped_blocks()[i]
    w = masked(b, b.matrix())
    expect, groups = _by_hand(b, b.matrix())
    ab = AbsBlock(b, w, Weighting(), torch.float64, torch.device("cpu"), copy)
    assert ab.group_shape is not None
    assert torch.equal(ab._g, torch.stack(groups).abs().double())
    dst, src = ab.sums()
    assert torch.allclose(dst, expect.abs().double().sum(1), rtol=1e-12, atol=0)
    assert torch.allclose(src, expect.abs().double().sum(0), rtol=1e-12, atol=0)
    if copy:  # the dense transposed copy, made from the compact groups on first use
        assert torch.equal(ab.t, expect.abs().double().t())
    else:
        assert ab.t is None
