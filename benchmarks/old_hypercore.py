"""The weighted hypercore peeling as it was before issue 11 (graphnn 2026-12-01, commit 8aecf4a),
kept here only so that ``bench_hypercore.py`` can print the speed-up measured in the same run.
Not part of the package; not maintained.

Batches of the k smallest alive neurons replayed on their own k x k adjacency, cut where a neuron
outside could have become the minimum first (see the git history of
``graphnn/analyses/hypercore.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from graphnn.analyses._blocks import Placed, Progress

TIE_RTOL = 1e-12
_MIN_BATCH, _MAX_BATCH = 8, 512
#: Full-pass takes of :class:`_SmallestAlive` before its sorted order is redone.
_RESORT_EVERY = 32
#: float64 entries of the per-batch work arrays (8 MB): bounds the batch size on wide graphs.
_ELEMENTS_PER_BATCH = 1 << 20


def _replay(a: np.ndarray, s: np.ndarray, tol: np.ndarray, level: float):
    """One-at-a-time peeling of a batch on its own adjacency ``a`` (k x k) from strengths ``s``:
    the order, each neuron's strength at removal, the level before and after each step."""
    s = s.copy()
    k = len(s)
    order = np.empty(k, dtype=np.int64)
    at_removal = np.empty(k)
    before = np.empty(k)
    after = np.empty(k)
    for q in range(k):
        i = int(np.argmin(s))
        v = s[i]
        order[q], at_removal[q], before[q] = i, v, level
        if v > level + tol[i]:
            level = v
        after[q] = level
        s -= a[i]
        s[i] = np.inf
    return order, at_removal, before, after


def _lowest_before_each_step(s, suspects, parts, order, n, device) -> np.ndarray:
    """For the batch removed in ``order``: the lowest strength among ``suspects`` before each
    step (exact), computed a few suspects at a time to bound memory."""
    f64 = torch.float64
    kk = len(order)
    perm = torch.from_numpy(order).to(device)
    low = np.full(kk, np.inf)
    step = max(1, _ELEMENTS_PER_BATCH // (2 * kk))
    where = torch.full((n,), -1, dtype=torch.long, device=device)
    for c0 in range(0, suspects.numel(), step):
        chunk = suspects[c0:c0 + step]
        where[chunk] = torch.arange(chunk.numel(), device=device)
        contrib = torch.zeros(kk, chunk.numel(), dtype=f64, device=device)
        for sel, t_start, rows in parts:
            pos = where[t_start:t_start + rows.shape[1]]
            hit = (pos >= 0).nonzero().reshape(-1)
            if hit.numel():
                contrib[sel[:, None], pos[hit][None, :]] += rows[:, hit]
        where[chunk] = -1
        contrib = contrib[perm]
        contrib.cumsum_(0)
        s_chunk = s[chunk]
        contrib.neg_().add_(s_chunk)  # row q: strengths after the first q + 1 removals
        before = torch.empty(kk, dtype=f64, device=device)
        before[0] = s_chunk.min()
        if kk > 1:
            before[1:] = contrib[:-1].min(1).values
        low = np.minimum(low, before.cpu().numpy())
    return low


class _SmallestAlive:
    """The ``k`` alive nodes of smallest current strength, without a pass over all nodes each time.

    Strengths only change on nodes a removal reaches ("dirty" nodes). The others keep the value
    they had at the last full sort, so the smallest of them are the first alive, clean entries of
    that sorted order; the answer is among those ``k`` and the dirty nodes. Once the dirty nodes
    are more than an eighth of all nodes (dense layers reach whole partitions), a take is one
    ``topk`` over all alive nodes, and the order is redone every ``_RESORT_EVERY`` such takes."""

    def __init__(self, s: torch.Tensor, alive: torch.Tensor):
        self.s, self.alive = s, alive
        self.n = s.numel()
        self._sort()

    def _sort(self) -> None:
        live = self.alive.nonzero().reshape(-1)
        self.order = live[torch.argsort(self.s[live], stable=True)]
        self.ptr = 0
        self.dirty = torch.zeros(self.n, dtype=torch.bool, device=self.s.device)
        self.dirty_nodes: list[torch.Tensor] = []
        self.dirty_count = 0
        self.full_takes = 0

    def mark(self, nodes: torch.Tensor) -> None:
        new = nodes[~self.dirty[nodes]]
        if new.numel():
            self.dirty[new] = True
            self.dirty_nodes.append(new)
            self.dirty_count += new.numel()

    def take(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(strengths, nodes)`` of the ``k`` smallest alive nodes (fewer if fewer are alive),
        in increasing strength."""
        if self.dirty_count > self.n // 8:  # most strengths changed: one pass over all nodes,
            self.full_takes += 1              # and a new sorted order now and then
            if self.full_takes < _RESORT_EVERY:
                inf = torch.tensor(float("inf"), dtype=self.s.dtype, device=self.s.device)
                return torch.topk(torch.where(self.alive, self.s, inf), k, largest=False, sorted=True)
            self._sort()
        order, window = self.order, 2 * k + 16
        while True:
            seg = order[self.ptr:self.ptr + window]
            ok = self.alive[seg] & ~self.dirty[seg]
            if int(ok.sum()) >= k or self.ptr + window >= order.numel():
                break
            window *= 4
        lead = int(ok.long().argmax()) if bool(ok.any()) else seg.numel()
        clean = seg[ok][:k]
        self.ptr += lead  # entries before the first clean one are removed or tracked as dirty
        if self.dirty_nodes:
            d = torch.cat(self.dirty_nodes)
            d = d[self.alive[d]]
            self.dirty_nodes = [d]
            cand = torch.cat([clean, d])
        else:
            cand = clean
        vals, pos = torch.topk(self.s[cand], min(k, cand.numel()), largest=False, sorted=True)
        return vals, cand[pos]


def peel(n: int, placed: Sequence[Placed], *, device: torch.device, tie_rtol: float = TIE_RTOL,
         progress: Progress | None = None) -> np.ndarray:
    """Hypercore number of every node of a node space of ``n`` nodes joined by ``placed``."""
    f64 = torch.float64
    s = torch.zeros(n, dtype=f64, device=device)
    for p in placed:
        dst_sums, src_sums = p.block.sums()
        s[p.dst_off:p.dst_off + p.block.n_dst] += dst_sums
        s[p.src_off:p.src_off + p.block.n_src] += src_sums
    tol_all = (s * tie_rtol).cpu().numpy()
    alive = torch.ones(n, dtype=torch.bool, device=device)
    core = np.zeros(n)
    level, left, k = 0.0, n, 64
    inf = torch.tensor(float("inf"), dtype=f64, device=device)
    # each block seen from both ends: (node range start, size, fetch rows/cols, target start, target size)
    ends = []
    for p in placed:
        b = p.block
        ends.append((p.dst_off, b.n_dst, b.rows, p.src_off, b.n_src))
        ends.append((p.src_off, b.n_src, b.cols, p.dst_off, b.n_dst))
    # entries fetched per node (its adjacency row across every block end): bounds a batch's memory
    degree = torch.zeros(n, dtype=torch.long, device=device)
    for start, size, _, _, t_size in ends:
        degree[start:start + size] += t_size
    max_batch = _MAX_BATCH
    pool = _SmallestAlive(s, alive)
    in_batch = torch.full((n,), -1, dtype=torch.long, device=device)
    total = torch.zeros(n, dtype=f64, device=device)
    while left:
        kk = min(k, left)
        vals, batch = pool.take(kk)
        fits = int((torch.cumsum(degree[batch], 0) <= _ELEMENTS_PER_BATCH).sum())
        if fits < kk:  # the smallest few whose rows fit the work arrays (at least one)
            kk = max(1, fits)
            vals, batch = vals[:kk], batch[:kk]
        in_batch[batch] = torch.arange(kk, device=device)
        # adjacency rows of the batch nodes, block end by block end: (batch positions, target start, rows)
        parts = []
        touched: dict[int, int] = {}  # partitions the batch's edges reach: start -> size
        for start, size, fetch, t_start, t_size in ends:
            sel = ((batch >= start) & (batch < start + size)).nonzero().reshape(-1)
            if sel.numel():
                parts.append((sel, t_start, fetch(batch[sel] - start).to(f64)))
                touched[t_start] = t_size
        a_bb = torch.zeros(kk, kk, dtype=f64, device=device)
        for sel, t_start, rows in parts:
            total[t_start:t_start + rows.shape[1]] += rows.sum(0)
            pos = in_batch[t_start:t_start + rows.shape[1]]
            hit = (pos >= 0).nonzero().reshape(-1)
            if hit.numel():
                a_bb[sel[:, None], pos[hit][None, :]] += rows[:, hit]
        order, at_removal, before, after = _replay(a_bb.cpu().numpy(), vals.cpu().numpy(),
                                                   tol_all[batch.cpu().numpy()], level)
        take = kk
        # a node outside the batch can only interfere if its strength could fall below the batch's;
        # every node the batch does not reach has s >= the batch's strengths, so look only there
        top = float(at_removal.max())
        found = []
        for t_start, t_size in touched.items():
            r = slice(t_start, t_start + t_size)
            hit = (alive[r] & (in_batch[r] < 0) & (s[r] - total[r] < top)).nonzero().reshape(-1)
            if hit.numel():
                found.append(hit + t_start)
        if found:
            suspects = torch.cat(found)
            low = _lowest_before_each_step(s, suspects, parts, order, n, device)
            ok = (at_removal <= before + tol_all[batch.cpu().numpy()[order]]) | (at_removal <= low)
            bad = np.flatnonzero(~ok)
            take = int(bad[0]) if bad.size else kk
        removed_pos = torch.from_numpy(order[:take]).to(device)
        if take == kk:
            for t_start, t_size in touched.items():
                s[t_start:t_start + t_size] -= total[t_start:t_start + t_size]
        else:
            keep = torch.zeros(kk, dtype=torch.bool, device=device)
            keep[removed_pos] = True
            for sel, t_start, rows in parts:
                use = keep[sel]
                if use.any():
                    s[t_start:t_start + rows.shape[1]] -= rows[use].sum(0)
        for t_start, t_size in touched.items():
            total[t_start:t_start + t_size] = 0.0
            pool.mark(torch.arange(t_start, t_start + t_size, device=device))
        in_batch[batch] = -1
        removed = batch[removed_pos]
        core[removed.cpu().numpy()] = after[:take]
        alive[removed] = False
        level = float(after[take - 1])
        left -= take
        k = min(2 * k, max_batch) if take == kk else min(max(_MIN_BATCH, 2 * take), max_batch)
        if progress:
            progress("hypercore", n - left, n)
    return core
