"""Which worker holds which block: blocks are grouped by the checkpoint file (shard) that stores
their tensor and whole shards are placed on workers, so each worker opens only its own shards,
once. Shards go to the least loaded worker, largest first (bytes); when there are fewer shards
than workers, single blocks are placed instead so that every worker gets work.

A block that no file can reopen travels with its tensor (:class:`~.host.HeldTensor`); when that
tensor is a view of a mapped checkpoint (a state_dict read with ``graphnn.load_state_dict``, a tied
name), reading it (the first-load check, the pickling that sends it) makes its pages resident:
:func:`release_held` gives them back once the blocks are sent.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .._pages import release_pages
from ..graph import Block, LayeredGraph
from .host import HeldTensor, ShardTensor


def tensor_files(g: LayeredGraph) -> dict[str, str]:
    """``{tensor name: checkpoint file}`` for a graph extracted from a path (a safetensors or
    pickle file, or a folder with an index file or a single weights file); empty for a graph
    built in memory. Only names and the index are read."""
    from ..extract.checkpoints import INDEX_FILES, SINGLE_FILES, member_path, open_checkpoint, read_index

    src = g.source
    if not isinstance(src, (str, os.PathLike)) or not os.path.exists(src):
        return {}
    path = Path(src)
    if not path.is_dir():
        return {e.name: str(path) for e in open_checkpoint(path)}
    for index_name in INDEX_FILES:
        if os.path.lexists(path / index_name):
            index = member_path(path, index_name)
            return {name: str(member_path(path, shard, index)) for name, shard in read_index(index).items()}
    for single in SINGLE_FILES:
        if os.path.lexists(path / single):
            file = member_path(path, single)
            return {e.name: str(file) for e in open_checkpoint(file)}
    return {}


def portable_block(b: Block, files: dict[str, str]) -> tuple[Block, str | None]:
    """A copy of ``b`` that can travel to a worker: its loader reopens the tensor's file by
    path and name there (``(block, file)``), or holds the tensor read here when no file stores
    it under the block's parameter name (``(block, None)``: an in-memory graph, a tied name)."""
    file = files.get(b.param)
    if file is not None:
        load = ShardTensor(file, b.param)
    else:
        load = HeldTensor(b.tensor())
        release_pages(load.tensor)  # what the first-load check read (a mapped file's pages)
    return dataclasses.replace(b, _load=load, _on_load=None, _entry_index=None), file


def release_held(blocks) -> int:
    """Release the mapped pages of the tensors that portable blocks hold (call it once the blocks
    are sent: pickling read them); the bytes released. Tensors in ordinary memory: nothing."""
    return sum(release_pages(b._load.tensor) for b in blocks if isinstance(b._load, HeldTensor))


def block_bytes(b: Block) -> int:
    n = 1
    for d in b.param_shape:
        n *= int(d)
    return n * b.dtype.itemsize if b.dtype is not None else n


def assign(g: LayeredGraph, workers: list[str]) -> dict[str, list[Block]]:
    """``{worker address: portable blocks}`` (graph order within each worker)."""
    files = tensor_files(g)
    units: dict[str, list[tuple[int, Block]]] = {}
    for i, b in enumerate(g.blocks.values()):
        pb, file = portable_block(b, files)
        units.setdefault(file if file is not None else f"<block {b.name}>", []).append((i, pb))
    if len(units) < len(workers):  # fewer shards than workers: place single blocks
        units = {f"<block {pb.name}>": [(i, pb)] for group in units.values() for i, pb in group}
    load = {w: 0 for w in workers}
    placed: dict[str, list[tuple[int, Block]]] = {w: [] for w in workers}
    for key in sorted(units, key=lambda k: (-sum(block_bytes(pb) for _, pb in units[k]), k)):
        w = min(workers, key=lambda a: (load[a], workers.index(a)))
        placed[w].extend(units[key])
        load[w] += sum(block_bytes(pb) for _, pb in units[key])
    return {w: [pb for _, pb in sorted(items, key=lambda t: t[0])] for w, items in placed.items() if items}
