"""Eigenvector centrality near the memory floor, and ``analyse``'s own overhead (issue 11 §2).

Measured in one run, on one CPU thread (medians of ``--repeats``; the floor and graphnn alternate
so that a change of machine load hits both):

1. MLPs of 1e7 and 5e7 edges (float32, and the 5e7 one in bfloat16 as a checkpoint stores it):
   time per matrix-vector product of graphnn's |w| operator (``BlockOperator``, which computes
   ``|W| x`` and ``|W|^T y`` for every block) against the *floor*: two plain matvecs ``W @ x`` and
   ``W.T @ y`` of the same matrices in float32 (for bf16, converted once beforehand, not timed).
   Also the whole ``eigenvector_centrality`` call divided by its number of products (load, the
   exact-sums pass, components included; timed in turn with the floor). Goal: <= 2x the floor.
2. MobileNetV2 (transformers' ``MobileNetV2ForImageClassification`` with its default config and
   1000 labels, random weights: 3.4M edges as torchvision's, 53 blocks, 17 depthwise convs):
   graphnn's whole ``eigenvector_centrality``
   against scipy's ``eigsh(which="LA")`` on the CSR adjacency (``g.to_scipy()``, built beforehand:
   compute only), same start vector and tolerance. Goal: graphnn faster.
3. ``analyse`` on the 1e7-edge MLP under cProfile: the time outside its timed steps
   (``Analysis.timings``: load + strength sums, centrality, hypercore, and any step other analyses
   add) as a share of the call. Goal: <= 10 %. Also, without the profiler, ``analyse`` beside the
   three analyses called one by one.
   Also: the one-time NaN/Inf check (``count_nonfinite``) per GB against a plain read.

Run: ``python benchmarks/bench_centrality.py [--repeats 5] [--quick]`` (``--quick``: 1e7 only).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
import warnings

import numpy as np
import torch

GOALS = {"floor_ratio": 2.0, "eigsh_ratio": 1.0, "overhead": 0.10}
#: (layer sizes, dtype) of the MLP cases: about 1e7 and 5e7 edges.
MLP_CASES = {"1e7": ((1826, 1826, 1826, 1826), torch.float32),
             "5e7": ((4096, 4096, 4096, 4096), torch.float32),
             "5e7-bf16": ((4096, 4096, 4096, 4096), torch.bfloat16)}


def mlp_blocks(sizes, dtype, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.empty(b, a)
        w.normal_(0.0, a ** -0.5, generator=gen)
        out[f"w{i}"] = (f"l{i}", f"l{i + 1}", w.to(dtype))
    return out


def mlp_graph(sizes, dtype):
    import graphnn

    return graphnn.LayeredGraph.from_matrices({f"l{i}": s for i, s in enumerate(sizes)}, mlp_blocks(sizes, dtype))


def _alternating(fs: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns (one warm-up each)."""
    for f in fs.values():
        f()
    ts = {k: [] for k in fs}
    for _ in range(repeats):
        for k, f in fs.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def bench_floor(case: str, repeats: int) -> dict:
    """Per-product time of graphnn's operator and of the whole call, against the floor."""
    import graphnn
    from graphnn.analyses._blocks import NodeSpace, load_abs_blocks, place, resolve_dtype
    from graphnn.analyses.centrality import BlockOperator

    sizes, dtype = MLP_CASES[case]
    g = mlp_graph(sizes, dtype)
    f32 = [b.matrix().float() for b in g.blocks.values()]  # the floor's matrices (not timed)
    xs = [torch.rand(m.shape[1]) for m in f32]
    ys = [torch.rand(m.shape[0]) for m in f32]

    def floor():
        for m, x, y in zip(f32, xs, ys):
            m @ x
            m.t() @ y

    dt = resolve_dtype(g.num_edges, None)
    dev = torch.device("cpu")
    space = NodeSpace.of_graph(g)
    op = BlockOperator(space.n, place(space, load_abs_blocks(g, dtype=dt, device=dev)), dev, dt)
    v = torch.rand(space.n, dtype=torch.float64)
    t = _alternating({"floor": floor, "operator": lambda: op(v),
                      "call": lambda: graphnn.eigenvector_centrality(g)}, repeats)
    t_call, df = t["call"], graphnn.eigenvector_centrality(g)
    products = df.attrs["iterations"]
    return {"case": case, "edges": g.num_edges, "dtype": str(dtype).replace("torch.", ""),
            "floor_s": t["floor"], "operator_s": t["operator"], "call_s": t_call, "products": products,
            "solver": df.attrs["solver"], "ratio_operator": t["operator"] / t["floor"],
            "ratio_call": t_call / products / t["floor"]}


def mobilenet_graph():
    import graphnn
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    torch.manual_seed(0)
    return graphnn.extract(MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=1000)).eval())


def bench_mobilenet(repeats: int) -> dict:
    from scipy.sparse.linalg import eigsh

    import graphnn

    g = mobilenet_graph()
    a = g.to_scipy(weight="abs")  # compute only: the CSR is built before the clock starts
    n = a.shape[0]
    v0 = np.full(n, 1.0 / np.sqrt(n))
    tol = 1e-10  # graphnn's float64 default

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return graphnn.eigenvector_centrality(g)

    out = {}
    t = _alternating({"graphnn": ours, "eigsh": lambda: eigsh(a, k=1, which="LA", v0=v0, tol=tol)}, repeats)
    df = ours()
    vals, vecs = eigsh(a, k=1, which="LA", v0=v0, tol=tol)
    ref = np.abs(vecs[:, 0]) / np.linalg.norm(vecs[:, 0])
    out.update(edges=g.num_edges, blocks=len(g.blocks), nodes=g.num_nodes, graphnn_s=t["graphnn"],
               eigsh_s=t["eigsh"], products=df.attrs["iterations"], solver=df.attrs["solver"],
               maxdiff=float(np.abs(df["centrality"].to_numpy() - ref).max()),
               eigenvalue_reldiff=abs(df.attrs["eigenvalue"] - float(vals[0])) / float(vals[0]))
    out["ratio"] = out["graphnn_s"] / out["eigsh_s"]
    return out


def bench_overhead() -> dict:
    """``analyse`` on the 1e7-edge MLP (fresh graph: the first read's NaN/Inf check included)."""
    import graphnn

    sizes, dtype = MLP_CASES["1e7"]
    graphnn.analyse(mlp_graph((8, 8, 8), dtype))  # imports and first-call set-up
    g = mlp_graph(sizes, dtype)
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    a = graphnn.analyse(g)
    prof.disable()
    total = time.perf_counter() - t
    stats = pstats.Stats(prof)
    inside = sum(a.timings.values())
    top = sorted(((v[3], f"{os.path.basename(k[0])}:{k[2]}") for k, v in stats.stats.items()), reverse=True)
    # the issue's reading: analyse against the three analyses called one by one (no profiler)
    t = time.perf_counter()
    graphnn.analyse(g)
    plain = time.perf_counter() - t
    separate = {}
    for name, f in (("strength", lambda: graphnn.strength(g)), ("centrality", lambda: graphnn.eigenvector_centrality(g)),
                    ("hypercore", lambda: graphnn.hypercore(g))):
        t = time.perf_counter()
        f()
        separate[name] = time.perf_counter() - t
    return {"total_s": total, "timings": a.timings, "outside_s": total - inside,
            "share": (total - inside) / total, "profile_top": top[:8], "plain_s": plain, "separate_s": separate}


def bench_nonfinite(repeats: int) -> dict:
    """The NaN/Inf check against a plain read (``sum`` in float32) of the same 200 MB."""
    from graphnn.graph import count_nonfinite

    t = torch.randn(50_000_000)
    r = _alternating({"count_nonfinite": lambda: count_nonfinite(t), "read": lambda: t.sum(),
                      "float64_sum": lambda: t.sum(dtype=torch.float64)}, repeats)
    gb = t.numel() * t.element_size() / 1e9
    return {"gb": gb, **{k + "_s": v for k, v in r.items()}}


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(repeats: int = 5, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"eigenvector centrality near the floor, 1 CPU thread, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load[0]:.2f} ({os.cpu_count()} CPUs)")
    results = {}
    print("\n1. Per matrix-vector product: graphnn's |w| operator and whole call vs the floor "
          "(W @ x and W.T @ y in float32)")
    print(f"   {'case':10} {'edges':>11} {'floor ms':>9} {'operator':>9} {'x floor':>8} "
          f"{'call/prod':>10} {'x floor':>8}  products, solver")
    for case in (("1e7",) if quick else tuple(MLP_CASES)):
        r = results[case] = bench_floor(case, repeats)
        print(f"   {case:10} {r['edges']:>11,} {r['floor_s'] * 1e3:9.2f} {r['operator_s'] * 1e3:9.2f} "
              f"{r['ratio_operator']:8.2f} {r['call_s'] / r['products'] * 1e3:10.2f} {r['ratio_call']:8.2f}  "
              f"{r['products']}, {r['solver']}")
        print(f"   {'':10} goal <= {GOALS['floor_ratio']:.0f}x the floor per product: "
              f"operator {_ok(r['ratio_operator'] <= GOALS['floor_ratio'])}, "
              f"whole call {_ok(r['ratio_call'] <= GOALS['floor_ratio'])}")

    m = results["mobilenet"] = bench_mobilenet(repeats)
    print(f"\n2. MobileNetV2 ({m['edges']:,} edges, {m['blocks']} blocks, {m['nodes']:,} neurons)")
    print(f"   graphnn eigenvector_centrality (whole call)  {m['graphnn_s']:8.4f} s  ({m['products']} products, "
          f"{m['solver']})")
    print(f"   scipy eigsh on the CSR (compute only)       {m['eigsh_s']:8.4f} s")
    print(f"   graphnn / eigsh = {m['ratio']:.2f}; goal < {GOALS['eigsh_ratio']:.0f}: {_ok(m['ratio'] < 1)}; "
          f"max |diff| {m['maxdiff']:.1e}, eigenvalue rel. diff {m['eigenvalue_reldiff']:.1e}")

    o = results["overhead"] = bench_overhead()
    print(f"\n3. analyse on the 1e7-edge MLP under cProfile: {o['total_s']:.2f} s "
          f"({', '.join(f'{k} {v:.2f}' for k, v in o['timings'].items())})")
    print(f"   outside the three analyses: {o['outside_s']:.3f} s = {o['share']:.1%}; goal <= "
          f"{GOALS['overhead']:.0%}: {_ok(o['share'] <= GOALS['overhead'])}")
    print("   most cumulative time: " + "; ".join(f"{name} {s:.2f}" for s, name in o["profile_top"][2:7]))
    sep = sum(o["separate_s"].values())
    print(f"   without the profiler: analyse {o['plain_s']:.2f} s; the three called one by one "
          f"({', '.join(f'{k} {v:.2f}' for k, v in o['separate_s'].items())}) {sep:.2f} s in all "
          f"(analyse also computes what the one-by-one calls do not: {', '.join(k for k in o['timings'] if k not in ('load_and_strength', 'centrality', 'hypercore')) or 'nothing'})")

    z = results["nonfinite"] = bench_nonfinite(repeats)
    print(f"\n4. NaN/Inf check of {z['gb']:.1f} GB float32: count_nonfinite {z['count_nonfinite_s']:.3f} s, "
          f"a plain float32 sum {z['read_s']:.3f} s ({z['count_nonfinite_s'] / z['read_s']:.2f}x), "
          f"a float64 sum {z['float64_sum_s']:.3f} s ({z['float64_sum_s'] / z['read_s']:.1f}x)")
    return results


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="the 1e7-edge case only")
    a = p.parse_args(argv)
    main(a.repeats, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
