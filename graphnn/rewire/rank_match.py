"""Rank matching: LaPerm's synchronisation step (Qiu & Suda, NeurIPS 2020; algorithms.md §4.2).

Give ``tensor`` the values of ``reference`` arranged in the order of ``tensor``'s own values:
within each group, the entry of rank ``r`` (ascending, 0-based) receives the ``r``-th smallest
reference value of that group. Groups are ``"out_unit"`` (one per output unit: the tensor
flattened to ``(shape[0], -1)``, each row one unit's fan-in, as LaPerm does for dense and conv
kernels), or ``"tensor"`` (all entries together). A 1-D tensor is one group either way.

Afterwards every group of ``tensor`` holds exactly the reference's multiset (so each output unit
has the reference's in-strength) while keeping its own ranking. Ties in ``tensor`` are ranked by
position (stable sort). Used after a short training, with a fresh base-initialiser draw as the
reference, it is a rank-preserving re-initialiser.
"""

from __future__ import annotations

import torch

from ..errors import InvalidParameterError
from ..validation import check_choice

GROUPS = ("out_unit", "tensor")


def rank_match_(tensor: torch.Tensor, reference: torch.Tensor, group: str = "out_unit") -> torch.Tensor:
    """Overwrite ``tensor`` (in place) with ``reference``'s values in ``tensor``'s rank order,
    per output unit (``group="out_unit"``) or over the whole tensor (``"tensor"``); returns
    ``tensor``. ``reference`` must have the same shape; it is cast to ``tensor``'s dtype.

    >>> import torch
    >>> w = torch.tensor([[0.3, -1.0, 2.0], [5.0, 4.0, 6.0]])
    >>> ref = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    >>> rank_match_(w, ref)
    tensor([[ 2.,  1.,  3.],
            [-2., -3., -1.]])
    """
    if not isinstance(tensor, torch.Tensor) or not isinstance(reference, torch.Tensor):
        raise TypeError(
            f"rank_match_ takes two tensors, got {type(tensor).__name__} and {type(reference).__name__}; "
            "for a module, call it on each parameter (e.g. with the same parameter of a fresh copy)"
        )
    check_choice("group", group, GROUPS)
    if tuple(tensor.shape) != tuple(reference.shape):
        raise InvalidParameterError(
            f"reference has shape {tuple(reference.shape)} but tensor has {tuple(tensor.shape)}: "
            "rank matching needs one reference value per entry"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"tensor has dtype {tensor.dtype}; only floating-point tensors can be rank-matched")
    if tensor.numel() == 0:
        return tensor
    rows = 1 if (group == "tensor" or tensor.dim() < 2) else tensor.shape[0]
    with torch.no_grad():
        own = tensor.detach().reshape(rows, -1)
        ref = reference.detach().to(tensor.device, tensor.dtype).reshape(rows, -1)
        order = torch.argsort(own, dim=1, stable=True)
        out = torch.empty_like(own)
        out.scatter_(1, order, ref.sort(dim=1).values)
        tensor.copy_(out.reshape(tensor.shape))
    return tensor
