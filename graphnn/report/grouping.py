"""Transformer layer index and role of every partition and block, for grouping figures.

The roles come from the analysis tables when they carry ``layer_index`` and ``role`` columns
(every :func:`graphnn.analyse` table does), otherwise from the names
(:func:`graphnn.analyses.roles.name_role`, or the partition lookup of
:func:`partition_role_function`); the columns themselves are made by
:func:`graphnn.analyses.roles.with_roles`.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from ..analyses.roles import name_role, partition_role, with_roles as _with_role_columns

RoleFn = Callable[[str], tuple]


def role_columns(frame: pd.DataFrame, name_column: str, fn: RoleFn | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with ``layer_index`` (nullable Int64) and ``role`` columns: its own
    (normalised) when it has them, else read from ``name_column`` with ``fn`` (default
    :func:`~graphnn.analyses.roles.name_role`)."""
    if {"layer_index", "role"} <= set(frame.columns):
        own = dict(zip(frame[name_column].astype(str), zip(frame["layer_index"], frame["role"])))
        return _with_role_columns(frame, name_column, lambda n: own[str(n)])
    return _with_role_columns(frame, name_column, (lambda n: fn(str(n))) if fn is not None else name_role)


def with_roles(frame: pd.DataFrame, name_column: str, fn: RoleFn | None = None) -> pd.DataFrame | None:
    """:func:`role_columns`, or ``None`` when no row has a layer index (nothing to group by)."""
    out = role_columns(frame, name_column, fn)
    return out if out["layer_index"].notna().any() else None


def is_layered(frame: pd.DataFrame | None, min_layers: int = 2) -> bool:
    """Whether the roles show a layered (transformer-like) model: at least ``min_layers``
    distinct layer indices (``False`` for ``None``, what :func:`with_roles` gives without)."""
    return frame is not None and frame["layer_index"].dropna().nunique() >= min_layers


def partition_role_function(layers: pd.DataFrame, graph=None) -> RoleFn:
    """A name -> ``(layer_index, role)`` function for partitions:
    :func:`graphnn.analyses.roles.partition_role` with each partition's kind and members (from
    ``graph``, else the ``kind`` column of ``layers`` when it has one)."""
    kinds: dict[str, str] = {}
    members: dict[str, tuple] = {}
    if graph is not None:
        for p in graph.partitions.values():
            kinds[p.name], members[p.name] = p.kind, tuple(p.members)
    elif "kind" in layers:
        kinds = dict(zip(layers["layer"].astype(str), layers["kind"].astype(str)))
    return lambda n: partition_role(n, kinds.get(n, "features"), members.get(n, ()))
