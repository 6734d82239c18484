"""Weighted hypercore and the 0/1 core near the floor (issue 11 §2), one thread, peers in the same run.

Graphs (built here, nothing downloaded):

* ``mlp``: ``nn.Linear`` 2048-2048-2048-1024 (default init, float32): 10.5M edges, 7,168 neurons.
* ``mobilenetv2``: transformers' ``MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=1000))``
  with random weights (seed 0), extracted with ``graphnn.extract``: the issue's MobileNetV2 (the
  model of ``bench_centrality.py``): 53 blocks, 17,267 neurons, 3.4M edges (17 depthwise blocks).

Printed for each graph:

1. Weighted hypercore: ``graphnn.hypercore(g)`` (the whole call: loading the blocks included),
   its peeling alone on loaded blocks, the implementation before issue 11 on the same loaded
   blocks (``old_hypercore.py``, one run; ``--no-old`` skips it), and a naive one-neuron-at-a-
   time peeling of the scipy CSR adjacency (the textbook loop, MobileNetV2 only); edges/s
   (structural edges / time; goal >= 20 M/s) and the numbers' largest relative difference to the
   old implementation and to the naive peeling (the same numbers are required).
2. The 0/1 core of the strongest 10 % of the edges (``top=0.1``): ``graphnn.hypercore(g,
   top=0.1)`` (whole call), the CSR of the kept edges it builds from loaded 0/1 blocks (timed
   apart, as NetworKit's graph build is), its bucket peeling on that CSR (the compute), the
   dense-lines path used above ``kcore.CSR_MAX_ENTRIES`` (everything included), and NetworKit's
   ``CoreDecomposition`` compute only (graph built beforehand, one thread), igraph ``coreness``
   and networkx ``core_number`` (up to ``--nx-max-edges``) on the same edge list; the numbers
   must be equal; goal: graphnn's peeling at least as fast as NetworKit's compute.

Times are medians of ``--repeats`` runs (wall clock; the CPU time of the process beside it, which
is what the ratios use: the machine may be shared). Run: ``python benchmarks/bench_hypercore.py
[--repeats 5] [--graphs mlp,mobilenetv2] [--no-old]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MLP_SIZES = (2048, 2048, 2048, 1024)
GOAL_EDGES_PER_S = 20e6


def _timed(f, repeats: int):
    """``(median wall s, median CPU s, result)`` over ``repeats`` runs after one warm-up."""
    out = f()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu), out


def _once(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return time.perf_counter() - t, time.process_time() - c, out


def build(name: str):
    import graphnn

    torch.manual_seed(0)
    if name == "mlp":
        model = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:])])
    elif name == "mobilenetv2":
        from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

        model = MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=1000)).eval()
    else:
        raise SystemExit(f"unknown graph {name!r}: use mlp or mobilenetv2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graphnn.extract(model)


def loaded(g, tau=None):
    """The blocks as ``graphnn.hypercore`` loads them, placed in the network node space."""
    from graphnn.analyses._blocks import NodeSpace, Weighting, load_abs_blocks, place, resolve_dtype

    dev = torch.device("cpu")
    blocks = load_abs_blocks(g, weighting=Weighting(tau), dtype=resolve_dtype(g.num_edges, None), device=dev)
    space = NodeSpace.of_graph(g)
    placed = place(space, blocks)
    for p in placed:
        p.block.sums()
    return space.n, placed


def naive_peel(a) -> np.ndarray:
    """One neuron at a time on a CSR adjacency: argmin over all alive neurons, subtract its row."""
    n = a.shape[0]
    s = np.asarray(a.sum(1)).ravel().astype(float)
    key = s.copy()
    core = np.zeros(n)
    level = 0.0
    for _ in range(n):
        i = int(np.argmin(key))
        level = max(level, s[i])
        core[i] = level
        key[i] = np.inf
        lo, hi = a.indptr[i], a.indptr[i + 1]
        nb = a.indices[lo:hi]
        s[nb] -= a.data[lo:hi]
        key[nb] = np.where(np.isinf(key[nb]), np.inf, s[nb])
    return core


def _maxrel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if len(a) else 0.0


def bench_weighted(name, g, repeats: int, old: bool) -> dict:
    import graphnn
    from graphnn.analyses.hypercore import peel

    r = {"edges": g.num_edges, "nodes": g.num_nodes, "blocks": len(g.blocks)}
    r["call_s"], r["call_cpu"], df = _timed(lambda: graphnn.hypercore(g), repeats)
    ours = df["core"].to_numpy()
    r["levels"] = int(len(np.unique(ours)))
    n, placed = loaded(g)
    r["peel_s"], r["peel_cpu"], got = _timed(lambda: peel(n, placed), repeats)
    r["peel_equal_call"] = bool(np.array_equal(got, ours))
    if old:
        import old_hypercore

        r["old_s"], r["old_cpu"], ref = _once(lambda: old_hypercore.peel(n, placed, device=torch.device("cpu")))
        r["old_maxrel"] = _maxrel(ours, ref)
    if name == "mobilenetv2":
        a = g.to_scipy(weight="abs").tocsr()
        r["naive_s"], r["naive_cpu"], ref = _once(lambda: naive_peel(a))
        r["naive_maxrel"] = _maxrel(ours, ref)
    return r


def edge_list(g, tau: float):
    """Global (u, v) of the structural edges with |w| >= tau (no parallel edges in these graphs)."""
    us, vs = [], []
    for b in g.blocks.values():
        m = b.matrix().detach().abs()
        mask = b.structure_mask()
        keep = m >= tau
        if mask is not None:
            keep &= mask
        r, c = keep.nonzero(as_tuple=True)
        us.append(r.numpy() + g.offset(b.dst))
        vs.append(c.numpy() + g.offset(b.src))
    return np.concatenate(us), np.concatenate(vs)


def bench_01(name, g, repeats: int, nx_max_edges: int) -> dict:
    import graphnn
    from graphnn.analyses import kcore

    r = {}
    r["call_s"], r["call_cpu"], df = _timed(lambda: graphnn.hypercore(g, top=0.1), repeats)
    ours = df["core"].to_numpy()
    tau = df.attrs["threshold"]
    n, placed = loaded(g, tau)

    def prepare():
        return kcore.csr_of_blocks(n, placed)

    r["prep_s"], r["prep_cpu"], (indptr, indices) = _timed(prepare, repeats)
    r["peel_s"], r["peel_cpu"], got = _timed(lambda: kcore.peel_csr(n, indptr, indices), repeats)
    r["peel_equal_call"] = bool(np.array_equal(got, ours))
    saved = kcore.CSR_MAX_ENTRIES
    kcore.CSR_MAX_ENTRIES = -1  # the dense-lines path, for graphs with too many kept edges for a CSR
    try:
        r["dense_s"], r["dense_cpu"], got = _timed(lambda: kcore.core_numbers(n, placed), repeats)
    finally:
        kcore.CSR_MAX_ENTRIES = saved
    r["dense_equal_call"] = bool(np.array_equal(got, ours))
    u, v = edge_list(g, tau)
    r["edges"], r["levels"] = int(u.size), int(len(np.unique(ours)))
    try:
        import networkit as nk

        nk.setNumberOfThreads(1)
        G = nk.Graph(g.num_nodes)
        G.addEdges((u.astype(np.uint64), v.astype(np.uint64)))

        def nk_run():
            cd = nk.centrality.CoreDecomposition(G)
            cd.run()
            return cd

        r["nk_s"], r["nk_cpu"], cd = _timed(nk_run, repeats)
        r["nk_equal"] = bool(np.array_equal(np.asarray(cd.scores()), ours))
    except ImportError:
        r["nk_s"] = None
    import igraph as ig

    Gi = ig.Graph(n=g.num_nodes, edges=np.column_stack([u, v]).tolist())
    r["ig_s"], r["ig_cpu"], ig_core = _timed(lambda: Gi.coreness(), repeats)
    r["ig_equal"] = bool(np.array_equal(np.asarray(ig_core), ours))
    if u.size <= nx_max_edges:
        import networkx as nx

        Gx = nx.Graph()
        Gx.add_nodes_from(range(g.num_nodes))
        Gx.add_edges_from(zip(u.tolist(), v.tolist()))
        r["nx_s"], r["nx_cpu"], nx_core = _once(lambda: nx.core_number(Gx))
        r["nx_equal"] = bool(np.array_equal([nx_core[i] for i in range(g.num_nodes)], ours))
    return r


def _rate(edges, s) -> str:
    return f"{edges / s / 1e6:7.1f} M edges/s"


def report(name, w: dict, z: dict) -> None:
    print(f"\n{name}: {w['nodes']:,} neurons, {w['blocks']} blocks, {w['edges']:,} edges")
    print(f"  1. weighted hypercore ({w['levels']:,} distinct levels)")
    print(f"     graphnn.hypercore(g)            {w['call_s']:8.3f} s  (CPU {w['call_cpu']:.3f} s)  "
          f"{_rate(w['edges'], w['call_cpu'])}  goal >= 20 M/s: "
          f"{'met' if w['edges'] / w['call_cpu'] >= GOAL_EDGES_PER_S else 'NOT met'}")
    print(f"     its peeling alone                {w['peel_s']:8.3f} s  (CPU {w['peel_cpu']:.3f} s)  "
          f"{_rate(w['edges'], w['peel_cpu'])}")
    if "old_s" in w:
        print(f"     before issue 11 (same blocks)    {w['old_s']:8.3f} s  (CPU {w['old_cpu']:.3f} s)  "
              f"peeling {w['old_cpu'] / w['peel_cpu']:.1f}x faster now; max rel diff {w['old_maxrel']:.1e}")
    if "naive_s" in w:
        print(f"     naive CSR one-at-a-time peel     {w['naive_s']:8.3f} s  (CPU {w['naive_cpu']:.3f} s)  "
              f"ratio {w['naive_cpu'] / w['peel_cpu']:.1f}x; max rel diff {w['naive_maxrel']:.1e}")
    print(f"  2. 0/1 core of the top 10 % edges ({z['edges']:,} edges, {z['levels']} levels)")
    print(f"     graphnn.hypercore(g, top=0.1)   {z['call_s']:8.3f} s  (CPU {z['call_cpu']:.3f} s)")
    print(f"     its CSR of the kept edges        {z['prep_s']:8.4f} s  (CPU {z['prep_cpu']:.4f} s)  "
          "(like a graph build)")
    print(f"     its bucket peeling on the CSR    {z['peel_s']:8.4f} s  (CPU {z['peel_cpu']:.4f} s)  "
          f"equal: {z['peel_equal_call']}")
    print(f"     dense-lines path (no CSR)        {z['dense_s']:8.4f} s  (CPU {z['dense_cpu']:.4f} s)  "
          f"equal: {z['dense_equal_call']}")
    if z.get("nk_s") is not None:
        print(f"     NetworKit CoreDecomposition      {z['nk_s']:8.4f} s  (CPU {z['nk_cpu']:.4f} s)  "
              f"graphnn/NetworKit CPU ratio {z['peel_cpu'] / z['nk_cpu']:.2f} "
              f"({'goal met' if z['peel_cpu'] <= z['nk_cpu'] else 'goal NOT met'}); equal: {z['nk_equal']}")
    print(f"     igraph coreness                  {z['ig_s']:8.4f} s  (CPU {z['ig_cpu']:.4f} s)  "
          f"equal: {z['ig_equal']}")
    if "nx_s" in z:
        print(f"     networkx core_number             {z['nx_s']:8.4f} s  (one run)  equal: {z['nx_equal']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--graphs", default="mlp,mobilenetv2")
    ap.add_argument("--no-old", action="store_true", help="skip the pre-issue-11 implementation (slow)")
    ap.add_argument("--nx-max-edges", type=int, default=300_000)
    ap.add_argument("--quick", action="store_true", help="2 repeats, no old implementation")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        args.repeats, args.no_old = 2, True
    print(f"bench_hypercore: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, one thread, "
          f"medians of {args.repeats}")
    for name in args.graphs.split(","):
        g = build(name)
        report(name, bench_weighted(name, g, args.repeats, not args.no_old), bench_01(name, g, args.repeats,
                                                                                       args.nx_max_edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
