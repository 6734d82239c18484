"""Tensor-native analyses against networkx and igraph, on one CPU thread (issue 3).

Measured in one run, peers included:

1. Eigenvector centrality on an MLP 784-512-512-10 (0.67M edges, ``nn.Linear`` default init,
   seed 0): graphnn vs ``networkx.eigenvector_centrality(G, weight="weight")`` (its defaults:
   tol 1e-6, max_iter raised so that it converges) and igraph's ``eigenvector_centrality``,
   the graph builds timed separately; the vectors must agree to 1e-6.
   Goals: >= 500x networkx, >= 20x igraph counting the build.
2. Hypercores on the same MLP: weighted (goal <= 1 s; checked against a one-neuron-at-a-time
   reference peeling of the dense adjacency) and classic k-cores of the top-10 % edges against
   ``networkx.core_number`` and igraph ``coreness`` (same numbers required).
3. strength + eigenvector centrality + hypercore (``graphnn.analyse``) on a 4 x 4096 MLP
   (50.3M float32 edges) in a fresh process: goal <= 10 s, peak RSS <= 2x the weights' bytes
   + 300 MB (the peak includes the interpreter and imports, reported separately).
4. Bytes per edge of each representation (RSS growth when building it, fresh processes).

Times are medians of ``--repeats`` runs except networkx (one run: about 1.2 s per power
iteration here; ``--quick`` times 3 iterations and extrapolates to the number of iterations it
needs, computed exactly by replaying its iteration with scipy, and says so). A CUDA timing of
case 3 is added when a GPU is present.

Run: ``python benchmarks/bench_analyses.py [--repeats 5] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

GOALS = {"nx_ratio": 500.0, "igraph_ratio": 20.0, "hypercore_s": 1.0, "big_s": 10.0}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MLP_SIZES = (784, 512, 512, 10)
BIG_SIZES = (4096, 4096, 4096, 4096)


def _median_time(f, repeats: int) -> tuple[float, object]:
    out = f()  # warm-up (and the result)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """Peak RSS of this process so far (MiB), interpreter start-up and imports included."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakRSS:
    """Highest RSS (MiB) seen while the ``with`` block runs, sampled every 0.5 ms."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _rss_mb(), False

        def sample():
            while not self._stop:
                self.peak = max(self.peak, _rss_mb())
                time.sleep(0.0005)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def mlp_graph(sizes=MLP_SIZES, seed: int = 0):
    import graphnn

    torch.manual_seed(seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
    return model, graphnn.extract(model)


def igraph_build(g):
    """What an igraph user does: edge list and |w| attribute from the weight matrices."""
    import igraph as ig

    src, dst, w = [], [], []
    for b in g.blocks.values():
        m = b.matrix().detach().abs().numpy()
        r, c = np.divmod(np.arange(m.size), m.shape[1])
        dst.append(r + g.offset(b.dst))
        src.append(c + g.offset(b.src))
        w.append(m.reshape(-1).astype(np.float64))
    G = ig.Graph(n=g.num_nodes, edges=np.column_stack([np.concatenate(src), np.concatenate(dst)]))
    G.es["weight"] = np.concatenate(w)
    return G


def networkx_iterations(g, tol: float = 1e-6, max_iter: int = 100_000) -> int:
    """Power iterations ``networkx.eigenvector_centrality`` needs (its rule, replayed with scipy)."""
    a = g.to_scipy(weight="abs")
    n = a.shape[0]
    x = np.full(n, 1.0 / n)
    for it in range(1, max_iter + 1):
        last = x
        x = last + a @ last
        x /= np.linalg.norm(x)
        if np.abs(x - last).sum() < n * tol:
            return it
    return max_iter


# -- 1. eigenvector centrality -------------------------------------------------------------------
def bench_centrality(repeats: int, quick: bool) -> dict:
    import networkx as nx

    import graphnn

    _, g = mlp_graph()
    res = {"edges": g.num_edges}
    res["graphnn_s"], ours = _median_time(lambda: graphnn.eigenvector_centrality(g), repeats)
    res["graphnn_solver"], res["graphnn_products"] = ours.attrs["solver"], ours.attrs["iterations"]
    ours_max = graphnn.eigenvector_centrality(g, normalise="max")["centrality"].to_numpy()

    res["igraph_build_s"], G_ig = _median_time(lambda: igraph_build(g), max(1, repeats // 2))
    res["igraph_s"], ig_vec = _median_time(lambda: G_ig.eigenvector_centrality(weights="weight"), repeats)
    res["igraph_maxdiff"] = float(np.abs(np.asarray(ig_vec) - ours_max).max())
    del G_ig

    t = time.perf_counter()
    G = g.to_networkx(weight="abs")
    res["networkx_build_s"] = time.perf_counter() - t
    need = networkx_iterations(g)
    res["networkx_iterations"] = need
    if quick:
        t = time.perf_counter()
        try:
            nx.eigenvector_centrality(G, weight="weight", max_iter=3)
        except nx.PowerIterationFailedConvergence:
            pass
        res["networkx_s"] = (time.perf_counter() - t) / 3 * need
        res["networkx_note"] = f"extrapolated: 3 iterations timed, x {need} needed"
        res["networkx_maxdiff"] = float("nan")
    else:
        t = time.perf_counter()
        ref = nx.eigenvector_centrality(G, weight="weight", max_iter=max(100, 2 * need))
        res["networkx_s"] = time.perf_counter() - t
        res["networkx_note"] = f"one full run ({need} power iterations)"
        res["networkx_maxdiff"] = float(np.abs(np.array([ref[v] for v in g.nodes()])
                                               - ours["centrality"].to_numpy()).max())
    del G
    return res


# -- 2. hypercores -------------------------------------------------------------------------------
def reference_peeling(a: np.ndarray) -> np.ndarray:
    """One neuron at a time on a dense adjacency (the definition, no batching)."""
    n = len(a)
    s = a.sum(1)
    alive = np.ones(n, bool)
    core = np.zeros(n)
    level = 0.0
    for _ in range(n):
        i = np.flatnonzero(alive)[np.argmin(s[alive])]
        level = max(level, s[i])
        core[i] = level
        alive[i] = False
        s -= a[i]
    return core


def bench_hypercore(repeats: int) -> dict:
    import networkx as nx

    import graphnn

    _, g = mlp_graph()
    res = {}
    res["graphnn_s"], ours = _median_time(lambda: graphnn.hypercore(g), repeats)
    dense = g.to_scipy(weight="abs").toarray()
    res["reference_s"], ref = _median_time(lambda: reference_peeling(dense), 1)
    res["weighted_maxreldiff"] = float(np.max(np.abs(ours["core"].to_numpy() - ref) / np.maximum(ref, 1e-300)))
    res["levels"] = int(ours["core"].nunique())

    res["top_graphnn_s"], top = _median_time(lambda: graphnn.hypercore(g, top=0.1), repeats)
    tau = top.attrs["threshold"]
    keep = [(u, v) for u, v, w in g.to_networkx(weight="abs").edges(data="weight") if w >= tau]
    G = nx.Graph()
    G.add_nodes_from(g.nodes())
    G.add_edges_from(keep)
    res["top_edges"] = G.number_of_edges()
    res["top_networkx_s"], nx_core = _median_time(lambda: nx.core_number(G), 1)
    import igraph as ig

    index = {v: i for i, v in enumerate(g.nodes())}
    Gi = ig.Graph(n=g.num_nodes, edges=[(index[u], index[v]) for u, v in keep])
    res["top_igraph_s"], ig_core = _median_time(lambda: Gi.coreness(), repeats)
    got = top["core"].to_numpy()
    res["top_equal_networkx"] = bool(np.array_equal(got, [nx_core[v] for v in g.nodes()]))
    res["top_equal_igraph"] = bool(np.array_equal(got, ig_core))
    return res


# -- 3. the 50M-edge MLP (child process) ---------------------------------------------------------
def child_big(repeats: int, device: str) -> dict:
    torch.set_num_threads(1)
    import graphnn

    rss0 = _rss_mb()
    gen = torch.Generator().manual_seed(0)
    blocks = {}
    for i, (a, b) in enumerate(zip(BIG_SIZES[:-1], BIG_SIZES[1:])):
        w = torch.empty(b, a)
        w.normal_(0.0, a ** -0.5, generator=gen)
        blocks[f"w{i}"] = (f"l{i}", f"l{i + 1}", w)
    g = graphnn.LayeredGraph.from_matrices({f"l{i}": s for i, s in enumerate(BIG_SIZES)}, blocks)
    weights_mb = sum(w.numel() * w.element_size() for _, _, w in blocks.values()) / 2**20
    rss1 = _rss_mb()
    times, peaks, last = [], [], None
    for _ in range(repeats):
        with PeakRSS() as during:
            t = time.perf_counter()
            last = graphnn.analyse(g, device=device)
            if device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        peaks.append(during.peak)
    peak = _peak_mb()
    parts = {}
    if device == "cpu":
        for name, f in (("strength", lambda: graphnn.strength(g)),
                        ("centrality", lambda: graphnn.eigenvector_centrality(g)),
                        ("hypercore", lambda: graphnn.hypercore(g))):
            t = time.perf_counter()
            f()
            parts[name] = time.perf_counter() - t
    return {"edges": g.num_edges, "analyse_s": statistics.median(times), "analyse_runs": times,
            "steps_s": last.timings, "separate_s": parts, "rss_imports_mb": rss0, "rss_weights_mb": rss1,
            "peak_mb": peak, "analyse_peaks_mb": peaks, "weights_mb": weights_mb, "limit_mb": 2 * weights_mb + 300,
            "centrality": last.centrality_info, "device": device}


# -- 4. bytes per edge (child processes) ---------------------------------------------------------
def child_bytes(kind: str) -> dict:
    torch.set_num_threads(1)
    import graphnn

    import igraph  # noqa: F401  (imports and first-call set-up are not the graph's memory)
    import networkx  # noqa: F401

    graphnn.analyse(graphnn.extract(torch.nn.Sequential(torch.nn.Linear(3, 2))))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:])])
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.dim() > 1)
    rss0 = _rss_mb()
    g = graphnn.extract(model)
    if kind == "igraph":
        G = igraph_build(g)
    elif kind == "networkx":
        G = g.to_networkx(weight="abs")
    rss1 = _rss_mb()
    out = {"edges": g.num_edges, "graph_b": (rss1 - rss0) * 2**20 / g.num_edges,
           "weights_b": weight_bytes / g.num_edges}
    if kind == "graphnn":
        with PeakRSS() as peak:
            graphnn.analyse(g)
        out["analyse_peak_extra_b"] = max(0.0, peak.peak - rss1) * 2**20 / g.num_edges
    return out


def _run_child(*args: str, timeout: int = 900) -> dict:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=ENV,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"child {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(repeats: int = 5, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    print(f"graphnn analyses vs networkx / igraph, 1 CPU thread, torch {torch.__version__}"
          + (" (quick: networkx extrapolated)" if quick else ""))
    results = {}

    c = results["centrality"] = bench_centrality(repeats, quick)
    print(f"\n1. Eigenvector centrality, MLP {'-'.join(map(str, MLP_SIZES))} ({c['edges']:,} edges)")
    print(f"   {'':32} {'seconds':>10} {'x graphnn':>10}  max |diff|")
    base = c["graphnn_s"]
    rows = [
        (f"graphnn ({c['graphnn_solver']}, {c['graphnn_products']} products)", base, None),
        ("networkx build (to_networkx)", c["networkx_build_s"], None),
        (f"networkx compute [{c['networkx_note']}]", c["networkx_s"], c["networkx_maxdiff"]),
        ("networkx build + compute", c["networkx_build_s"] + c["networkx_s"], None),
        ("igraph build", c["igraph_build_s"], None),
        ("igraph compute", c["igraph_s"], c["igraph_maxdiff"]),
        ("igraph build + compute", c["igraph_build_s"] + c["igraph_s"], None),
    ]
    for name, s, diff in rows:
        ratio = "" if name.startswith("graphnn") else f"{s / base:10.0f}"
        d = "" if diff is None else f"{diff:.1e}"
        print(f"   {name:32.60} {s:10.4f} {ratio:>10}  {d}")
    c["ratio_networkx"] = c["networkx_s"] / base
    c["ratio_igraph_with_build"] = (c["igraph_build_s"] + c["igraph_s"]) / base
    c["ratio_igraph_compute"] = c["igraph_s"] / base
    print(f"   goals: networkx >= {GOALS['nx_ratio']:.0f}x: {_ok(c['ratio_networkx'] >= GOALS['nx_ratio'])} "
          f"({c['ratio_networkx']:.0f}x); igraph incl. build >= {GOALS['igraph_ratio']:.0f}x: "
          f"{_ok(c['ratio_igraph_with_build'] >= GOALS['igraph_ratio'])} ({c['ratio_igraph_with_build']:.0f}x; "
          f"compute only {c['ratio_igraph_compute']:.1f}x); same vector to 1e-6: "
          f"{_ok(c['igraph_maxdiff'] <= 1e-6 and not c['networkx_maxdiff'] > 1e-6)}")

    h = results["hypercore"] = bench_hypercore(repeats)
    print(f"\n2. Hypercores, same MLP")
    print(f"   weighted hypercore, graphnn         {h['graphnn_s']:10.4f} s  ({h['levels']} distinct levels); "
          f"goal <= {GOALS['hypercore_s']:.0f} s: {_ok(h['graphnn_s'] <= GOALS['hypercore_s'])}")
    print(f"   reference peeling (dense, numpy)    {h['reference_s']:10.4f} s  (one neuron at a time; "
          f"max rel. diff {h['weighted_maxreldiff']:.1e})")
    print(f"   classic k-core of the top 10 % edges ({h['top_edges']:,} edges):")
    print(f"     graphnn hypercore(top=0.1)        {h['top_graphnn_s']:10.4f} s")
    print(f"     networkx core_number              {h['top_networkx_s']:10.4f} s  "
          f"({h['top_networkx_s'] / h['top_graphnn_s']:.1f}x; same numbers: {_ok(h['top_equal_networkx'])}; "
          "graph build not counted)")
    print(f"     igraph coreness                   {h['top_igraph_s']:10.4f} s  "
          f"({h['top_igraph_s'] / h['top_graphnn_s']:.2f}x; same numbers: {_ok(h['top_equal_igraph'])}; "
          "graph build not counted)")

    b = results["big"] = _run_child("big", str(max(1, min(repeats, 3))), "cpu")
    print(f"\n3. strength + centrality + hypercore (graphnn.analyse), MLP 4 x 4096 ({b['edges']:,} float32 edges), "
          "fresh process")
    print(f"   analyse: {b['analyse_s']:.2f} s median of {len(b['analyse_runs'])} "
          f"({', '.join(f'{k} {v:.2f}' for k, v in b['steps_s'].items())}); goal <= {GOALS['big_s']:.0f} s: "
          f"{_ok(b['analyse_s'] <= GOALS['big_s'])}")
    print(f"   separately: {', '.join(f'{k} {v:.2f} s' for k, v in b['separate_s'].items())}")
    later = max(b["analyse_peaks_mb"][1:], default=float("nan"))
    print(f"   peak RSS of the process {b['peak_mb']:.0f} MiB; limit 2 x weights + 300 MiB = {b['limit_mb']:.0f} MiB: "
          f"{_ok(b['peak_mb'] <= b['limit_mb'])}")
    print(f"     (interpreter + imports {b['rss_imports_mb']:.0f} MiB; after creating the {b['weights_mb']:.0f} MiB of "
          f"weights {b['rss_weights_mb']:.0f} MiB; highest during the first analyse {b['analyse_peaks_mb'][0]:.0f} MiB, "
          f"which includes the graph's one-time NaN/Inf count of each tensor on first read; during the later "
          f"ones {later:.0f} MiB)")
    if torch.cuda.is_available():
        gpu = results["big_cuda"] = _run_child("big", "3", "cuda")
        print(f"   CUDA ({torch.cuda.get_device_name()}): analyse {gpu['analyse_s']:.2f} s median "
              f"({', '.join(f'{k} {v:.2f}' for k, v in gpu['steps_s'].items())})")
    else:
        print("   (no CUDA device here: no GPU timing)")

    per = results["bytes"] = {k: _run_child("bytes", k) for k in ("graphnn", "igraph", "networkx")}
    print(f"\n4. Bytes per edge, MLP {'-'.join(map(str, MLP_SIZES))} (RSS growth, fresh processes)")
    print(f"   graphnn   {per['graphnn']['graph_b']:7.1f} B/edge for the graph (extract keeps views of the "
          f"{per['graphnn']['weights_b']:.0f} B/edge float32 weights); analyse peak "
          f"+{per['graphnn']['analyse_peak_extra_b']:.1f} B/edge")
    print(f"   igraph    {per['igraph']['graph_b']:7.1f} B/edge (extract + igraph graph with a float weight attribute)")
    print(f"   networkx  {per['networkx']['graph_b']:7.1f} B/edge (extract + Graph with weight attributes)")
    return results


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="time 3 networkx iterations and extrapolate")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, *rest = a.child
        out = child_big(int(rest[0]), rest[1]) if kind == "big" else child_bytes(rest[0])
        print(json.dumps(out))
        return 0
    main(a.repeats, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(_cli(sys.argv[1:]))
