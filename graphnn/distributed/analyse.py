"""``graphnn.analyse(g, client=...)``: the analyses of :func:`graphnn.analyse` on a
``dask.distributed`` cluster, with the same definitions and, up to float64 rounding, the same
numbers.

- **Placement**: blocks are placed on workers by shard (:mod:`.placement`); each worker's
  :class:`~.host.BlockHost` actor opens its shards once, reads each tensor once and keeps its
  blocks for the whole analysis.
- **Strength, strength variance**: one pass on the workers; each returns per block its row and
  column sums and its block-table record (O(nodes)); the client adds them in graph order, as the
  single process does (bit-identical).
- **Eigenvector centrality**: connected components from each worker's spanning forest
  (O(nodes) pairs), then per candidate component the single process's solver (a Lanczos cycle,
  ARPACK if needed) driven by the client. Each matrix-vector product sends every worker the
  vector over the partitions its blocks touch and gets its partial ``A x`` back over the same
  partitions: O(nodes) floats per product, never O(edges).
- **Weighted hypercore**: exact peeling driven by the client (:func:`peel`). Each round
  removes either every neuron at the current level (within the tie tolerance of
  :mod:`graphnn.analyses.hypercore`) or a batch of the weakest neurons that one-at-a-time
  peeling would remove in a row (checked exactly, see :func:`peel`); the workers whose
  partitions hold a removed neuron read the rows of the removed neurons only and return what
  their removal takes from their neurons' strengths. Cost: one round trip per round, O(nodes)
  floats each; rounds are at least the distinct core levels divided by the batch size and grow
  with the batches that fail their check (neurons of adjacent layers at close strengths):
  correct, but far slower than the single process on large models.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..errors import InvalidParameterError, NonFiniteWeightsWarning
from ..graph import LayeredGraph
from ..validation import check_bool, check_choice

Progress = Callable[[str, int, int], None]


@dataclass
class _Host:
    """The client's view of one worker's actor: ``nodes`` are the global numbers of its local
    space (in local order)."""

    address: str
    actor: Any
    nodes: np.ndarray
    partitions: tuple[str, ...]
    blocks: tuple[str, ...]


class Traffic:
    """Bytes sent to and received from the workers, by step."""

    def __init__(self):
        self.by_step: dict[str, int] = {}

    def add(self, step: str, *arrays) -> None:
        self.by_step[step] = self.by_step.get(step, 0) + sum(int(np.asarray(a).nbytes) for a in arrays)


def _results(futures):
    return [f.result() for f in futures]


def _hosts(g: LayeredGraph, client, dtype: torch.dtype, device: str, core_tau: float | None) -> list[_Host]:
    from .host import BlockHost
    from .placement import assign, release_held

    try:
        info = client.scheduler_info(n_workers=-1)  # every worker (the default lists only a few)
    except TypeError:  # dask.distributed before 2025: always all of them
        info = client.scheduler_info()
    workers = sorted(info["workers"])
    if not workers:
        raise InvalidParameterError("the Dask cluster has no workers: start some (or wait for them) and retry")
    names = list(g.partitions)
    hosts, futures = [], []
    placed = assign(g, workers)
    for address, blocks in placed.items():
        touched = {e for b in blocks for e in (b.src, b.dst)}
        parts = [n for n in names if n in touched]
        sizes = [g.partitions[n].size for n in parts]
        nodes = np.concatenate([np.arange(g.offset(n), g.offset(n) + g.partitions[n].size) for n in parts])
        futures.append(client.submit(BlockHost, blocks, parts, sizes, dtype=str(dtype).replace("torch.", ""),
                                     device=str(device), num_edges=g.num_edges, core_tau=core_tau,
                                     actor=True, workers=[address], allow_other_workers=False, pure=False))
        hosts.append(_Host(address, None, nodes.astype(np.int64), tuple(parts), tuple(b.name for b in blocks)))
    for h, f in zip(hosts, futures):
        h.actor = f.result()
    for blocks in placed.values():  # sent: the held tensors' mapped pages go back
        release_held(blocks)
    return hosts


class DistributedOperator:
    """``x -> A x`` for the whole graph's |w| adjacency, summed over the hosts' partial products
    (the interface of :class:`graphnn.analyses.centrality.BlockOperator`: ``n``, ``calls``)."""

    def __init__(self, n: int, hosts: list[_Host], traffic: Traffic):
        self.n, self.hosts, self.traffic = n, hosts, traffic
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        xs = x.detach().to("cpu", torch.float64).numpy()
        parts = [xs[h.nodes] for h in self.hosts]
        answers = _results([h.actor.matvec(p) for h, p in zip(self.hosts, parts)])
        y = np.zeros(self.n)
        for h, yh in zip(self.hosts, answers):
            y[h.nodes] += yh
        self.traffic.add("centrality", *parts, *answers)
        return torch.from_numpy(y)


def _labels(n: int, hosts: list[_Host], traffic: Traffic) -> np.ndarray:
    """Connected components of the non-zero edges (labels numbered by first node)."""
    from ..analyses.components import labels_from_edges

    forests = _results([h.actor.components() for h in hosts])
    traffic.add("components", *forests)
    return labels_from_edges(n, [h.nodes[f] for h, f in zip(hosts, forests)])


def _centrality(g: LayeredGraph, hosts: list[_Host], *, normalise: str, tol: float | None, max_iter: int,
                dtype: torch.dtype, traffic: Traffic,
                per_component: bool = False) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """The single process's component-wise solve (see
    :func:`graphnn.analyses.centrality.leading_eigenvector`) on the distributed operator:
    ``(centrality, info, component labels or None)``."""
    from ..analyses.centrality import _info, component_eigenvectors, default_tol

    n = g.num_nodes
    tol = default_tol(dtype) if tol is None else float(tol)
    if n == 0:
        return np.zeros(0), _info("auto", normalise, per_component), np.zeros(0, dtype=np.int64)
    op = DistributedOperator(n, hosts, traffic)
    total = sum(_results([h.actor.total() for h in hosts]))
    labels = _labels(n, hosts, traffic)
    strength = np.zeros(n)
    for h, s in zip(hosts, _results([h.actor.abs_strength() for h in hosts])):
        strength[h.nodes] += s
    x, info = component_eigenvectors(op, labels, strength, total=total, normalise=normalise, tol=tol,
                                     max_iter=max_iter, solver="auto", device=torch.device("cpu"),
                                     per_component=per_component)
    return x, info, labels


#: Largest speculative batch of the hypercore peeling (neurons removed in one round trip).
MAX_BATCH = 4096


def peel(n: int, hosts: list[_Host], nodes: np.ndarray, group: list[str] | None, traffic: Traffic,
         progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """Hypercore number of the global ``nodes`` in the graph of the blocks named in ``group``
    (all blocks: ``None``), by exact peeling driven from here; returns ``(core over all n
    nodes, NaN outside nodes; rounds)``. Every round costs one request to the workers holding a
    removed neuron (see :meth:`.host.BlockHost.decrement`).

    Rounds: (1) every neuron at the current level (strength within the tie tolerance of it, and
    not above a neuron that is not) is removed at once: one-at-a-time peeling would give each of
    them the level too. (2) Otherwise the level must rise: the ``k`` weakest neurons are removed
    together *if* that is what one-at-a-time peeling would do, checked on the decrement their
    removal causes: no edge among them (their strengths stay put while they go) and every other
    neuron stays strictly above the last of them (none could become the weakest first); their
    numbers are then replayed in order. A failed check costs one round and shrinks ``k``; a
    success doubles it (up to :data:`MAX_BATCH`)."""
    from ..analyses.hypercore import TIE_RTOL

    s = np.zeros(n)
    for h, sh in zip(hosts, _results([h.actor.core_strength(group) for h in hosts])):
        s[h.nodes] += sh
        traffic.add("hypercore", sh)
    tol = s * TIE_RTOL
    alive = np.zeros(n, dtype=bool)
    alive[nodes] = True
    local = []  # global -> local position on each host (-1: not there)
    for h in hosts:
        m = np.full(n, -1, dtype=np.int64)
        m[h.nodes] = np.arange(len(h.nodes))
        local.append(m)

    def decrement(removed: np.ndarray) -> np.ndarray:
        calls = []
        for h, m in zip(hosts, local):
            r = m[removed]
            r = r[r >= 0]
            if r.size:
                calls.append((h, h.actor.decrement(r, group)))
                traffic.add("hypercore", r)
        d = np.zeros(n)
        for h, f in calls:
            dec = f.result()
            traffic.add("hypercore", dec)
            d[h.nodes] += dec
        return d

    core = np.full(n, np.nan)
    level, left, rounds, k = 0.0, int(alive.sum()), 0, 1
    total = left
    while left:
        rounds += 1
        within = alive & (s <= level + tol)
        if within.any():
            others = np.where(alive & ~within, s, np.inf)
            removed = np.flatnonzero(within & (s <= others.min()))
            core[removed] = level
            alive[removed] = False
            left -= removed.size
            if left:
                s -= decrement(removed)
        else:
            cand = np.flatnonzero(alive)
            kk = min(k, cand.size)
            if kk < cand.size:
                cand = cand[np.argpartition(s[cand], kk - 1)[:kk]]
            batch = cand[np.lexsort((cand, s[cand]))]
            d = decrement(batch) if kk > 1 or left > kk else np.zeros(n)  # (the check needs d)
            if kk > 1:
                rest = alive.copy()
                rest[batch] = False
                if d[batch].any() or (rest.any() and (s[rest] - d[rest]).min() <= s[batch[-1]]):
                    k = max(1, kk // 4)  # not what one-at-a-time peeling would do: retry smaller
                    continue
            for v in batch:
                if s[v] > level + tol[v]:
                    level = float(s[v])
                core[v] = level
            alive[batch] = False
            left -= kk
            s -= d
            k = min(2 * kk, MAX_BATCH)
        if progress:
            progress("hypercore", total - left, total)
    return core, rounds


def _cores(g: LayeredGraph, hosts: list[_Host], scope: str, traffic: Traffic,
           progress: Progress | None) -> tuple[dict[str, np.ndarray], int]:
    n = g.num_nodes
    if scope == "network":
        core, rounds = peel(n, hosts, np.arange(n), None, traffic, progress)
        return {"core": core}, rounds
    core_in, core_out = np.full(n, np.nan), np.full(n, np.nan)
    cache: dict[tuple[str, ...], np.ndarray] = {}
    rounds = 0
    names = list(g.partitions)
    for i, name in enumerate(names):
        for side, group in (("in", [b for b in g.blocks.values() if b.dst == name]),
                            ("out", [b for b in g.blocks.values() if b.src == name])):
            if not group:
                continue
            key = tuple(sorted(b.name for b in group))
            if key not in cache:
                parts = {e for b in group for e in (b.src, b.dst)}
                nodes = np.concatenate([np.arange(g.offset(p), g.offset(p) + g.partitions[p].size)
                                        for p in names if p in parts])
                cache[key], r = peel(n, hosts, nodes, list(key), traffic)
                rounds += r
            o = g.offset(name)
            target = core_in if side == "in" else core_out
            target[o:o + g.partitions[name].size] = cache[key][o:o + g.partitions[name].size]
        if progress:
            progress("hypercore", i + 1, len(names))
    return {"core_in": core_in, "core_out": core_out}, rounds


def analyse_distributed(
    g: LayeredGraph,
    client,
    *,
    strength: bool = True,
    centrality: bool = True,
    core: bool = True,
    normalise: str = "l2",
    tol: float | None = None,
    max_iter: int = 10_000,
    core_scope: str = "network",
    core_threshold: float | None = None,
    core_top: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    per_component: bool = False,
    spectral: bool = True,
):
    """:func:`graphnn.analyse` on the workers of ``client`` (a ``distributed.Client``); the
    same :class:`~graphnn.analyses.summary.Analysis`, with ``centrality_info["dask"]`` and
    ``timings`` saying how many workers took part, the rounds and the bytes moved. ``device``
    is where each worker computes (``"auto"``: CUDA where that worker has it).
    ``core_top`` needs the whole graph's edge ranking and is not available here: pass
    ``core_threshold``. ``spectral``: the block table's spectral columns, each worker computing
    those of its own blocks; ``timings["spectral"]`` is then the workers' SVD seconds summed
    over the workers (part of the ``load_and_strength`` wall time, during which they run in
    parallel). ``options`` has the keys of :func:`graphnn.analyse`'s plus ``dask`` (the
    scheduler); ``weightwatcher`` is ``False`` here (``analyse(..., weightwatcher=True,
    client=...)`` adds ``ww_alpha`` in the calling process and records ``True``)."""
    from ..analyses._blocks import resolve_dtype
    from ..analyses.centrality import check_options
    from ..analyses.hypercore import _weighting, as_integers
    from ..analyses.strength import add_block_sums, neuron_frame
    from ..analyses.roles import add_role_columns
    from ..analyses.summary import Analysis, _layer_table, block_frame, strength_columns

    _check_client(client)
    t_start = time.perf_counter()
    check_options(normalise, "auto", max_iter, tol, per_component)
    check_choice("core_scope", core_scope, ("network", "block"))
    for name, flag in (("strength", strength), ("centrality", centrality), ("core", core)):
        check_bool(name, flag)
    if core and core_top is not None:
        raise InvalidParameterError(
            "core_top= is not available with client= (it ranks every edge of the graph at once): pass "
            "core_threshold= (keep |w| >= tau) instead, or analyse without a client")
    weighting = _weighting(g, core_threshold, None) if core else None
    integral = bool(weighting is not None and weighting.integral)
    dt = resolve_dtype(g.num_edges, dtype)
    device = str(device)
    options = {"strength": strength, "centrality": centrality, "core": core, "normalise": normalise, "tol": tol,
               "max_iter": max_iter, "core_scope": core_scope, "core_threshold": core_threshold, "core_top": core_top,
               "dtype": str(dt).replace("torch.", ""), "device": device, "per_component": per_component,
               "spectral": spectral, "weightwatcher": False, "dask": _address(client)}
    timings: dict[str, Any] = {}
    traffic = Traffic()

    t0 = time.perf_counter()
    hosts = _hosts(g, client, dt, device, weighting.tau if integral else None)
    need_abs = centrality or (core and not integral)
    if progress:
        progress("load", 0, len(hosts))
    loaded: dict[str, dict] = {}
    futures = [h.actor.load(need_abs, core, spectral) for h in hosts]
    for i, f in enumerate(futures):
        for rec in f.result():
            loaded[rec["name"]] = rec
            traffic.add("load", rec["rows"], rec["cols"], rec["abs_rows"], rec["abs_cols"])
        if progress:
            progress("load", i + 1, len(hosts))
    n = g.num_nodes
    sums = {k: np.zeros(n) for k in ("in", "out", "abs_in", "abs_out")}
    block_recs = []
    for b in g.blocks.values():  # graph order, as the single process adds them
        rec = loaded[b.name]
        add_block_sums(g, b, torch.from_numpy(rec["rows"]), torch.from_numpy(rec["cols"]), sums["in"], sums["out"])
        add_block_sums(g, b, torch.from_numpy(rec["abs_rows"]), torch.from_numpy(rec["abs_cols"]),
                       sums["abs_in"], sums["abs_out"])
        block_recs.append(dict(rec["record"]))
        _note_nonfinite(g, b.param, rec["nonfinite"])
    timings["load_and_strength"] = time.perf_counter() - t0
    if spectral:  # the workers' seconds, summed over them (they run in parallel, inside the load step)
        timings["spectral"] = sum(r.pop("_spectral_s", 0.0) for r in block_recs)

    columns: dict[str, np.ndarray] = strength_columns(sums) if strength else {}
    centrality_info: dict[str, Any] = {}
    if centrality:
        t0 = time.perf_counter()
        if progress:
            progress("centrality", 0, 1)
        x, centrality_info, labels = _centrality(g, hosts, normalise=normalise, tol=tol, max_iter=max_iter, dtype=dt,
                                                 traffic=traffic, per_component=per_component)
        columns["centrality"] = x
        if per_component:
            columns["component"] = labels
        if progress:
            progress("centrality", 1, 1)
        timings["centrality"] = time.perf_counter() - t0
    rounds = 0
    if core:
        t0 = time.perf_counter()
        cols, rounds = _cores(g, hosts, core_scope, traffic, progress)
        columns.update(as_integers(cols) if integral else cols)
        timings["hypercore"] = time.perf_counter() - t0
    products = centrality_info.get("iterations", 0)
    dask_info = {"scheduler": options["dask"], "workers": len(hosts),
                 "blocks_per_worker": {h.address: len(h.blocks) for h in hosts},
                 "bytes": dict(traffic.by_step),
                 "bytes_per_matvec": (traffic.by_step.get("centrality", 0) // products) if products else 0,
                 "hypercore_rounds": rounds}
    if centrality:
        centrality_info["dask"] = dask_info
    timings["dask"] = dask_info
    for h in hosts:  # let the workers drop their blocks
        h.actor = None
    neurons = neuron_frame(g, columns)
    layers = _layer_table(g, neurons, list(columns))
    blocks = block_frame(block_recs, spectral)
    add_role_columns(g, neurons, layers, blocks)
    return Analysis(neurons=neurons, layers=layers, blocks=blocks, centrality_info=centrality_info,
                    options=options, runtime_s=time.perf_counter() - t_start, timings=timings)


def _check_client(client) -> None:
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - the extra is missing
        from ..errors import MissingDependencyError
        raise MissingDependencyError("client= needs dask.distributed: pip install 'graphnn[dask]'") from e
    if not isinstance(client, Client):
        raise InvalidParameterError(f"client={client!r}: pass a distributed.Client (e.g. "
                                    "graphnn.distributed.connect('local:2')), or leave it None")


def _address(client) -> str:
    try:
        return str(client.scheduler.address)
    except Exception:  # noqa: BLE001 - informative only
        return "?"


def _note_nonfinite(g: LayeredGraph, param: str, count: int) -> None:
    """Record a worker's NaN/Inf count in the coverage table, warning as a local read does."""
    rec = getattr(g, "_coverage_index", {}).get(param)
    if rec is None or rec.get("nonfinite") is not None:
        return
    rec["nonfinite"] = count
    if count:
        warnings.warn(f"{param}: {count} NaN/Inf weights; results touching this block are not meaningful (see the "
                      "'nonfinite' column of the coverage table)", NonFiniteWeightsWarning, stacklevel=4)
