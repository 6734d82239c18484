"""Transformer layer index and role of every partition and block, for grouping figures.

The roles come from the analysis tables when they carry ``layer_index`` and ``role`` columns,
otherwise from :func:`graphnn.analyses.roles.name_role` applied to the names; when neither is
available (an older graphnn without the roles module) there is no grouping and the report falls
back to one row per partition.
"""

from __future__ import annotations

import math
from typing import Callable

import pandas as pd

RoleFn = Callable[[str], tuple]


def role_function() -> RoleFn | None:
    """:func:`graphnn.analyses.roles.name_role`, or ``None`` when it is not available."""
    try:
        from ..analyses.roles import name_role
    except ImportError:
        return None
    return name_role


def _clean(li, role):
    if li is None or li is pd.NA or (isinstance(li, float) and math.isnan(li)):
        li = None
    else:
        li = int(li)
    if role is None or role is pd.NA or (isinstance(role, float) and math.isnan(role)) or role == "":
        role = None
    else:
        role = str(role)
    return li, role


def with_roles(frame: pd.DataFrame, name_column: str, fn: RoleFn | None = None) -> pd.DataFrame | None:
    """``frame`` with ``layer_index`` (nullable Int64) and ``role`` columns: its own when it has
    them, else computed from ``name_column`` with ``fn`` (default :func:`role_function`).
    ``None`` when no role information exists or no row has a layer index."""
    if frame is None or name_column not in getattr(frame, "columns", ()):
        return None
    out = frame.copy()
    if not {"layer_index", "role"} <= set(out.columns):
        fn = fn or role_function()
        if fn is None:
            return None
        pairs = [_clean(*fn(str(n))) for n in out[name_column]]
        out["layer_index"] = pd.array([p[0] for p in pairs], dtype="Int64")
        out["role"] = [p[1] for p in pairs]
    else:
        pairs = [_clean(li, r) for li, r in zip(out["layer_index"], out["role"])]
        out["layer_index"] = pd.array([p[0] for p in pairs], dtype="Int64")
        out["role"] = [p[1] for p in pairs]
    if not out["layer_index"].notna().any():
        return None
    return out


def role_map(frame: pd.DataFrame | None, name_column: str) -> dict[str, tuple[int | None, str | None]]:
    """``{name: (layer_index, role)}`` of :func:`with_roles` (empty without roles)."""
    r = with_roles(frame, name_column) if frame is not None else None
    if r is None:
        return {}
    return {str(n): _clean(li, ro) for n, li, ro in zip(r[name_column], r["layer_index"], r["role"])}


def is_layered(frame: pd.DataFrame | None, min_layers: int = 2) -> bool:
    """Whether the roles show a layered (transformer-like) model: at least ``min_layers``
    distinct layer indices."""
    return frame is not None and frame["layer_index"].dropna().nunique() >= min_layers


def partition_role_function(layers: pd.DataFrame | None, graph=None) -> RoleFn | None:
    """A name -> ``(layer_index, role)`` function for partitions:
    :func:`graphnn.analyses.roles.partition_role` with each partition's kind and members (from
    ``graph``, else the ``kind`` column of ``layers``), or ``None`` without the roles module."""
    try:
        from ..analyses.roles import partition_role
    except ImportError:
        return None
    kinds: dict[str, str] = {}
    members: dict[str, tuple] = {}
    if graph is not None:
        for p in graph.partitions.values():
            kinds[p.name], members[p.name] = p.kind, tuple(p.members)
    elif layers is not None and "kind" in layers:
        kinds = dict(zip(layers["layer"].astype(str), layers["kind"].astype(str)))
    return lambda n: partition_role(n, kinds.get(n, "features"), members.get(n, ()))
