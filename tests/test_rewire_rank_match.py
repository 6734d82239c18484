"""Rank matching (LaPerm's synchronisation, algorithms.md §4.2 step 4)."""

from __future__ import annotations

import pytest
import torch

from graphnn.rewire import rank_match_

torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(9, 7), (8, 3, 3, 3), (12, 1, 3, 3)], ids=["linear", "conv2d", "depthwise"])
def test_each_unit_gets_the_reference_values_in_its_own_order(shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g)
    ref = torch.rand(shape, generator=g) * 3 - 1
    before = w.clone()
    out = rank_match_(w, ref)
    assert out is w
    rows, rows_before, rows_ref = w.reshape(shape[0], -1), before.reshape(shape[0], -1), ref.reshape(shape[0], -1)
    # multisets: each output unit holds exactly the reference unit's values
    assert torch.equal(rows.sort(1).values, rows_ref.sort(1).values)
    # order: brute force, entry by entry: value of rank r within the unit = r-th smallest reference value
    for i in range(shape[0]):
        for k in range(rows.shape[1]):
            r = int((rows_before[i] < rows_before[i, k]).sum())
            assert rows[i, k] == rows_ref[i].sort().values[r]
    # the multiset of the whole tensor is the reference's
    assert torch.equal(w.flatten().sort().values, ref.flatten().sort().values)


def test_tensor_group_and_one_dimensional_tensors():
    w = torch.tensor([[3.0, 1.0], [2.0, 0.0]])
    ref = torch.tensor([[10.0, 40.0], [20.0, 30.0]])
    rank_match_(w, ref, group="tensor")
    assert torch.equal(w, torch.tensor([[40.0, 20.0], [30.0, 10.0]]))
    b = torch.tensor([0.5, -0.5, 0.0])
    rank_match_(b, torch.tensor([7.0, 8.0, 9.0]))
    assert torch.equal(b, torch.tensor([9.0, 7.0, 8.0]))


def test_ties_ranked_by_position_and_dtype_cast():
    w = torch.zeros(1, 4, dtype=torch.float64)
    rank_match_(w, torch.tensor([[4.0, 3.0, 2.0, 1.0]]))
    assert torch.equal(w, torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64))
    assert w.dtype == torch.float64


def test_keeps_gradients_and_parameters_working():
    lin = torch.nn.Linear(4, 3)
    ref = torch.randn(3, 4)
    rank_match_(lin.weight, ref)
    assert lin.weight.requires_grad and isinstance(lin.weight, torch.nn.Parameter)
    assert torch.equal(lin.weight.detach().sort(1).values, ref.sort(1).values)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reference has shape"):
        rank_match_(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="group must be"):
        rank_match_(torch.zeros(2, 3), torch.zeros(2, 3), group="in_unit")
    with pytest.raises(TypeError, match="two tensors"):
        rank_match_(torch.nn.Linear(2, 2), torch.zeros(2, 2))
