"""The built-in example behind ``graphnn demo``: a small CNN trained for a few seconds on the
8x8 digits bundled with scikit-learn (1,797 images, 10 classes; nothing is downloaded), saved
as safetensors before and after training, then reported like any checkpoint.

>>> from graphnn.demo import run_demo
>>> res = run_demo("graphnn-demo")          # doctest: +SKIP
>>> res.report                              # doctest: +SKIP
PosixPath('graphnn-demo/report.html')
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .errors import MissingDependencyError
from .validation import check_device

#: Shuffled copies per layer for the trained model's null-model baseline (about 4 s of CPU).
NULL_COPIES = 99


class DigitsNet(nn.Module):
    """Conv stem, one residual conv block, 2x2 max-pool, flatten, two Linear layers:
    1x8x8 -> 32 channels -> 32 -> (+ skip) -> 32x4x4 -> 128 -> 10 classes (~85k parameters)."""

    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc1 = nn.Linear(width * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        x = F.max_pool2d(x, 2).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def load_digits_tensors(seed: int = 0, test_fraction: float = 0.2):
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``: images ``(n, 1, 8, 8)``
    scaled to [0, 1], a seeded random split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise MissingDependencyError(
            "graphnn demo trains on the digits data set bundled with scikit-learn: "
            "pip install scikit-learn (or pip install 'graphnn[studies]')"
        ) from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def train(model: nn.Module, x, y, *, epochs: int, seed: int, lr: float = 3e-3, batch: int = 64,
          device: str = "cpu", progress: Callable[[str, int, int], None] | None = None) -> None:
    """Plain Adam + cross-entropy training, seeded data order."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = x.to(device), y.to(device)
    for ep in range(epochs):
        perm = torch.randperm(len(y), generator=g).to(device)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if progress:
            progress("train", ep + 1, epochs)
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x, y, device: str = "cpu") -> float:
    return float((model(x.to(device)).argmax(1) == y.to(device)).float().mean())


@dataclass
class DemoResult:
    """Paths written by :func:`run_demo` and the trained model's test accuracy."""

    report: Path
    compare_report: Path
    initial_checkpoint: Path
    trained_checkpoint: Path
    test_accuracy: float
    train_seconds: float


def run_demo(out_dir: str | os.PathLike = "graphnn-demo", *, seed: int = 0, epochs: int = 12,
             device: str = "auto", progress: Callable[[str, int, int], None] | None = None,
             log: Callable[[str], None] | None = None) -> DemoResult:
    """Train :class:`DigitsNet` on the digits (seeded), save ``demo-init.safetensors`` and
    ``demo-trained.safetensors`` in ``out_dir``, and write ``report.html`` (the trained
    checkpoint) and ``compare.html`` (init vs trained) there. Takes a few seconds on one CPU
    thread; ``device`` is used for training and the analyses."""
    from .extract import save_state_dict
    from .report.pipeline import analyse_file, extract_options, write_comparison
    from .report.html import render_report, write_html

    say = log or (lambda msg: None)
    run_device = str(check_device(device))  # "auto": CUDA when available; a bad device is a usage error
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = DigitsNet()
    init_path, trained_path = out / "demo-init.safetensors", out / "demo-trained.safetensors"
    save_state_dict(model.state_dict(), init_path)

    xtr, ytr, xte, yte = load_digits_tensors(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is much faster than several on small machines
    try:
        t0 = time.perf_counter()
        train(model, xtr, ytr, epochs=epochs, seed=seed, device=run_device, progress=progress)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    acc = accuracy(model, xte, yte, run_device)
    say(f"trained DigitsNet on {len(ytr)} digits for {epochs} epochs in {seconds:.1f} s: "
        f"test accuracy {acc:.3f} on {len(yte)} held-out digits")
    save_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, trained_path)

    ex = extract_options()
    before = analyse_file(init_path, extract=ex, device=device, progress=progress)
    # The trained model against 99 shuffled copies of each layer (seeded): the report shows
    # which layers' structure differs from what any arrangement of their weights would give.
    after = analyse_file(trained_path, extract=ex, device=device, progress=progress,
                         analyse_options={"null": NULL_COPIES, "null_kind": "shuffle", "seed": seed})
    facts = {"demo": f"DigitsNet trained {epochs} epochs (seed {seed}) on scikit-learn digits",
             "test accuracy": f"{acc:.3f}"}
    after.provenance.extra.update(facts)
    report = write_html(render_report(after.analysis, after.provenance, after.graph,
                                      title="graphnn demo: DigitsNet trained on digits"), out / "report.html")
    compare = write_comparison({"init": before, "trained": after}, out / "compare.html",
                               title="graphnn demo: DigitsNet before and after training",
                               extra=list(facts.items()))
    say(f"wrote {report} and {compare}")
    return DemoResult(report, compare, init_path, trained_path, acc, seconds)
