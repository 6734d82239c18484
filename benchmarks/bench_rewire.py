"""PA rewiring of a ResNet-18-sized model: ``fast`` vs ``faithful`` on one CPU thread.

Target (issue 4): ``fast`` >= 5x faster than ``faithful``, measured in the same run. The model
is an ImageNet-style ResNet-18 defined here (11.7M parameters, 21 rewired weight tensors).
``faithful`` is timed once per distinct unit-matrix shape and multiplied by the number of
tensors of that shape (rows are sequential and its cost does not depend on the values);
``fast`` is timed per shape group as it really runs (the tensors of one shape together), median
of ``repeats``, and once more end to end on the whole model. A CUDA timing is added when a GPU
is present.

A second table times the CPU fast pass per entry on the Llama-7B weight shapes (bf16, one
thread, ``time.process_time``, median of ``repeats``) against the numpy-argsort baseline measured
in the same run (the previous implementation: a float32 copy, every row sorted up front, a
float64 ``np.argsort`` per row, a transposed copy for the second pass). Both run on the first
``rows`` rows (pass 1) and the first ``rows`` columns (pass 2) of each matrix: the per-row cost of
a pass does not depend on the row's position.

Run: ``python -m benchmarks.bench_rewire [repeats] [rows]`` (or ``python benchmarks/bench_rewire.py``).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from graphnn.analyses.strength import tensor_strength_variance
from graphnn.rewire import pa as pa_mod
from graphnn.rewire._targets import select_targets
from graphnn.rewire.pa import rewire_targets_

#: Llama-7B unit-matrix shapes (n_out x fan_in): q/k/v/o, gate/up, down, LM head.
LLAMA_SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ImageNet-style ResNet-18 (7x7 stem, 4 stages of 2 basic blocks, 1000 classes)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


def _time(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ResNet18()
    n_params = sum(p.numel() for p in model.parameters())
    targets = select_targets(model)
    groups: dict[tuple, list] = defaultdict(list)
    for t in targets:
        groups[tuple(t.units().shape)].append(t)
    print(f"PA rewiring, ResNet-18 ({n_params / 1e6:.2f}M parameters, {len(targets)} weight tensors, "
          f"{len(groups)} unit-matrix shapes), 1 CPU thread, torch {torch.__version__}")
    print(f"{'shape (n_out x fan_in)':>24} {'n':>3} {'faithful s':>11} {'fast s':>9} {'speed-up':>9}")
    total_faithful = total_fast = 0.0
    rows = []
    for shape, members in sorted(groups.items(), key=lambda kv: kv[0][0] * kv[0][1]):
        one = members[0]
        saved = [m.tensor.detach().clone() for m in members]
        t_faithful_one = _time(lambda: rewire_targets_([one], seed=1, mode="faithful"), 1)
        t_faithful = t_faithful_one * len(members)
        t_fast = _time(lambda: rewire_targets_(members, seed=1, mode="fast"), repeats)
        with torch.no_grad():
            for m, s in zip(members, saved):
                m.tensor.copy_(s)
        total_faithful += t_faithful
        total_fast += t_fast
        rows.append((shape, len(members), t_faithful, t_fast))
        print(f"{f'{shape[0]} x {shape[1]}':>24} {len(members):>3} {t_faithful:>11.3f} {t_fast:>9.3f} "
              f"{t_faithful / t_fast:>8.1f}x")
    print(f"{'sum over shapes':>24} {len(targets):>3} {total_faithful:>11.3f} {total_fast:>9.3f} "
          f"{total_faithful / total_fast:>8.1f}x")

    originals = [t.tensor.detach().clone() for t in targets]
    j_before = statistics.mean(tensor_strength_variance(t.units())[0] for t in targets)
    times = []
    for _ in range(repeats):
        with torch.no_grad():
            for t, o in zip(targets, originals):
                t.tensor.copy_(o)
        t0 = time.perf_counter()
        rewire_targets_(targets, seed=2, mode="fast")
        times.append(time.perf_counter() - t0)
    t_end = statistics.median(times)
    j_after = statistics.mean(tensor_strength_variance(t.units())[0] for t in targets)
    print(f"fast, whole model in one call (median of {repeats}): {t_end:.3f} s "
          f"({total_faithful / t_end:.1f}x faster than faithful); mean J over the {len(targets)} tensors "
          f"{j_before:.4f} -> {j_after:.4f}")
    result = {"faithful_s": total_faithful, "fast_s": total_fast, "fast_end_to_end_s": t_end,
              "speedup": total_faithful / total_fast, "rows": rows}
    if torch.cuda.is_available():
        model = ResNet18().cuda()
        cuda_targets = select_targets(model)
        rewire_targets_(cuda_targets, seed=1, mode="fast")  # warm-up
        torch.cuda.synchronize()

        def run_cuda():
            rewire_targets_(cuda_targets, seed=1, mode="fast")
            torch.cuda.synchronize()
        t_cuda = _time(run_cuda, repeats)
        print(f"fast on {torch.cuda.get_device_name()}: {t_cuda:.3f} s for the whole model "
              f"({total_faithful / t_cuda:.1f}x faster than faithful on 1 CPU thread)")
        result["cuda_s"] = t_cuda
    else:
        print("no CUDA device: GPU timing skipped")
    target = 5.0
    status = "meets" if result["speedup"] >= target else "MISSES"
    print(f"target: fast >= {target:.0f}x faithful -> {result['speedup']:.1f}x ({status} the target)")
    return result


def _argsort_pass_(m: np.ndarray, rng: np.random.Generator) -> None:
    """The numpy-argsort baseline: one pass as graphnn ran it before the radix order (float
    rows sorted up front, a float64 argsort of the keys per row, a scatter)."""
    b, r, c = m.shape
    sorted_rows = np.sort(m[:, 1:], axis=2)
    acc = np.zeros((b, c))
    chunk = max(1, pa_mod._DRAW_BUDGET // (b * c))
    draws, start = None, 0
    for t in range(1, r):
        if draws is None or t - start >= draws.shape[1]:
            start = t
            draws = rng.standard_exponential(size=(b, min(chunk, r - t), c))
        acc += m[:, t - 1]
        p = acc + (np.abs(acc.min(axis=1, keepdims=True)) + 1.0)
        order = np.argsort(draws[:, t - start] / p, axis=1)
        m[0, t, order[0]] = sorted_rows[0, t - 1]


def llama_pass_costs(repeats: int = 3, rows: int = 64) -> list[dict]:
    """ns per entry of each pass on the Llama shapes (bf16), fast pass vs the argsort baseline."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    out = []
    print(f"\nCPU fast pass on Llama-7B shapes (bf16, 1 thread; {rows} rows/columns per pass, median of "
          f"{repeats}; ns per entry, time.process_time)")
    print(f"{'shape':>14} {'pass':>5} {'row length':>10} {'argsort ns':>11} {'radix ns':>9} {'speed-up':>9}")
    for r, c in LLAMA_SHAPES:
        w = (torch.randn(r, c, generator=gen) * 0.02).bfloat16()
        bits = w.view(torch.int16).numpy()
        for which, length in ((1, c), (2, r)):
            base, fast = [], []
            for k in range(repeats):
                t0 = time.process_time()
                sub = w[:rows] if which == 1 else w[:, :rows].T
                _argsort_pass_(np.ascontiguousarray(sub.float().numpy())[None], np.random.default_rng(k))
                base.append(time.process_time() - t0)
                view = bits[:rows][None] if which == 1 else bits[:, :rows].T[None]
                t0 = time.process_time()
                pa_mod._pa_pass_race_numpy_(view, np.random.default_rng(k), "bfloat16")
                fast.append(time.process_time() - t0)
            n = rows * length
            b_ns, f_ns = statistics.median(base) / n * 1e9, statistics.median(fast) / n * 1e9
            out.append({"shape": (r, c), "pass": which, "argsort_ns": b_ns, "radix_ns": f_ns})
            print(f"{f'{r} x {c}':>14} {which:>5} {length:>10} {b_ns:>11.1f} {f_ns:>9.1f} {b_ns / f_ns:>8.2f}x")
    return out


if __name__ == "__main__":
    n_rep = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    main(repeats=n_rep)
    llama_pass_costs(repeats=n_rep, rows=int(sys.argv[2]) if len(sys.argv) > 2 else 64)
