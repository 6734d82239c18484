"""Small models for the studies and the base initialisers they compare.

Every weight tensor lives in an ``nn.Linear`` or ``nn.Conv1d``/``nn.Conv2d`` registered as a
direct child, in forward order, so graphnn sees a plain layered graph.
"""

from __future__ import annotations

import torch
from torch import nn

#: Base initialisers: name -> function(tensor, generator) writing in place.
INITIALISERS = {
    # He et al. 2015, fan_in mode, gain sqrt(2) (ReLU): N(0, 2 / fan_in).
    "kaiming_normal": lambda w, g: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu",
                                                           generator=g),
    # Saxe et al. 2014, gain 1, on the (out, numel / out) flattening (as torch does for convs).
    "orthogonal": lambda w, g: nn.init.orthogonal_(w, gain=1.0, generator=g),
}


def init_function(scheme: str):
    """``scheme`` as a one-argument in-place initialiser ``f(tensor)`` drawing from torch's global
    RNG (the form graphnn.rewire's ``init=`` / ``base_init=`` arguments take)."""
    if scheme not in INITIALISERS:
        raise ValueError(f"unknown initialiser {scheme!r}: use one of {sorted(INITIALISERS)}")
    fill = INITIALISERS[scheme]

    def init(tensor):
        return fill(tensor, None)

    init.__name__ = f"{scheme}_"
    return init


def weight_modules(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv modules of ``model`` in registration order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


@torch.no_grad()
def initialise_(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Draw every Linear/Conv weight of ``model`` with ``scheme`` from a generator seeded with
    ``seed`` (layers in registration order) and set every bias to zero; returns ``model``."""
    if scheme not in INITIALISERS:
        raise ValueError(f"unknown initialiser {scheme!r}: use one of {sorted(INITIALISERS)}")
    gen = torch.Generator().manual_seed(int(seed))
    for m in weight_modules(model):
        INITIALISERS[scheme](m.weight, gen)
        if m.bias is not None:
            m.bias.zero_()
    return model


class MLP(nn.Module):
    """``in -> hidden[0] -> ... -> num_classes`` with ReLU and optional dropout after each
    hidden layer; flattens its input."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (256, 128),
                 num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        sizes = (in_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.drop(torch.relu(layer(x)))
        return self.out(x)


class SmallCNN(nn.Module):
    """Two conv blocks (conv k=5, ReLU, max-pool 2) with ``channels`` filters, then a hidden
    dense layer and the classifier. ``dims`` = 1 (signals) or 2 (images). Convolutions are
    'valid' on images (LeNet-like, 28 -> 24 -> 12 -> 8 -> 4) and 'same' on signals."""

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, int] = (8, 16),
                 hidden: int = 64, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        dims = len(input_shape) - 1
        conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
        pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d}[dims]
        pad = 2 if dims == 1 else 0
        self.conv1 = conv(input_shape[0], channels[0], 5, padding=pad)
        self.conv2 = conv(channels[0], channels[1], 5, padding=pad)
        self.pool = pool(2)
        spatial = 1
        for s in input_shape[1:]:
            spatial *= ((s + 2 * pad - 4) // 2 + 2 * pad - 4) // 2
        self.fc1 = nn.Linear(channels[1] * spatial, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class LeNet1d(nn.Module):
    """LeNet-5 layout for length-40 signals (Vahedian et al.'s CIFAR LeNet, in 1-D): conv 1->6
    (k=5), ReLU, max-pool 2, conv 6->16 (k=5), ReLU, max-pool 2, dense 112->120->84->10 with ReLU
    and dropout before each dense layer."""

    def __init__(self, length: int = 40, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv1d(1, 6, 5)
        self.conv2 = nn.Conv1d(6, 16, 5)
        self.pool = nn.MaxPool1d(2)
        flat = 16 * (((length - 4) // 2 - 4) // 2)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(self.drop(x.flatten(1))))
        x = torch.relu(self.fc2(self.drop(x)))
        return self.fc3(self.drop(x))


def build(kind: str, input_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """``"mlp"``, ``"cnn"`` or ``"lenet1d"`` for data of ``input_shape`` (channels first)."""
    if kind == "mlp":
        n = 1
        for s in input_shape:
            n *= s
        return MLP(n, dropout=dropout)
    if kind == "cnn":
        return SmallCNN(input_shape, dropout=dropout)
    if kind == "lenet1d":
        return LeNet1d(input_shape[-1], dropout=dropout)
    raise ValueError(f"unknown model kind {kind!r}: use 'mlp', 'cnn' or 'lenet1d'")
