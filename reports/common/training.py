"""The paired training loop.

Pairing: the data order and the dropout masks of epoch ``e`` depend only on ``(order_seed, e)``,
so two arms trained with the same ``order_seed`` see the same minibatches in the same order and
the same dropout draws (for equal layer shapes); only what the arms do to the weights differs.

Optimiser: SGD with momentum (PyTorch's formulation), cross-entropy loss, constant learning rate.
Reported metrics per epoch: the mean training loss and accuracy over the epoch's minibatches
(model in train mode, as usually logged) and the test loss / accuracy after the epoch (eval mode).
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .data import Dataset


def epoch_seed(order_seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` (0-based) of the run with ``order_seed``."""
    return (int(order_seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


def epoch_order(order_seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of the ``n`` training samples used in epoch ``epoch``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(order_seed, epoch)))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``(x, y)``."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    model.train(was_training)
    return loss / len(x), correct / len(x)


def train(model: nn.Module, data: Dataset, *, epochs: range | int, lr: float, order_seed: int,
          batch_size: int = 128, momentum: float = 0.9,
          on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> list[dict]:
    """Train ``model`` in place over ``epochs`` (an int ``E`` means ``range(E)``; a range such as
    ``range(1, 5)`` continues a run with the data order of those epochs) with a fresh optimiser.

    Returns one dict per epoch: ``epoch`` (1-based count of epochs completed), ``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ``diverged`` (non-finite loss seen; the run is
    then stopped and the remaining epochs reported with chance accuracy and infinite loss).
    ``on_epoch_end(epoch, model)`` is called after each epoch's evaluation.
    """
    if isinstance(epochs, int):
        epochs = range(epochs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    n = len(data.x_train)
    records: list[dict] = []
    diverged = False
    chance = 1.0 / data.num_classes
    for e in epochs:
        if diverged:
            records.append(dict(epoch=e + 1, train_loss=math.inf, train_acc=chance,
                                test_loss=math.inf, test_acc=chance, diverged=True))
            continue
        model.train()
        torch.manual_seed(epoch_seed(order_seed, e) + 1)  # dropout masks of this epoch
        order = epoch_order(order_seed, e, n)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
        if diverged:
            records.append(dict(epoch=e + 1, train_loss=math.inf, train_acc=chance,
                                test_loss=math.inf, test_acc=chance, diverged=True))
            continue
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        if not math.isfinite(test_loss):
            diverged = True
        records.append(dict(epoch=e + 1, train_loss=loss_sum / n, train_acc=correct / n,
                            test_loss=test_loss, test_acc=test_acc, diverged=diverged))
        if on_epoch_end is not None:
            on_epoch_end(e + 1, model)
    return records
