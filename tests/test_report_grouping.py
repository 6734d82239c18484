"""graphnn.report.grouping: the roles the report groups by, for every way its callers reach it
(analysis tables with their own role columns, hand-made tables without them, partitions by kind
or by graph). Oracle: roles written here by hand."""

from __future__ import annotations

import pandas as pd

import graphnn
from graphnn.report import grouping
from models import MLP, seeded

Q0, UP1 = "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"


def test_tables_without_role_columns_get_them_from_the_names():
    blocks = pd.DataFrame({"block": [Q0 + ".weight", UP1 + ".weight", "lm_head.weight"], "J": [1.0, 2.0, 3.0]})
    out = grouping.with_roles(blocks, "block")
    assert out["layer_index"].tolist() == [0, 1, pd.NA] and out["role"].tolist() == ["q", "up", "head"]
    assert "layer_index" not in blocks  # a copy
    assert grouping.is_layered(out)
    # partitions: by the layers' kind column (a residual partition is the stream) or by the graph
    layers = pd.DataFrame({"layer": [Q0, "model.stream", UP1], "kind": ["features", "residual", "features"]})
    out = grouping.with_roles(layers, "layer", grouping.partition_role_function(layers))
    assert out["role"].tolist() == ["q", "stream", "up"] and out["layer_index"].tolist() == [0, pd.NA, 1]
    no_kind = layers.drop(columns="kind")
    out = grouping.role_columns(no_kind, "layer", grouping.partition_role_function(no_kind))
    assert out["role"].tolist() == ["q", None, "up"]  # without kinds the stream is not known


def test_own_columns_are_kept_and_a_model_without_indices_gives_none():
    own = pd.DataFrame({"layer": ["a", "b", "c"], "layer_index": pd.array([4, None, 5], dtype="Int64"),
                        "role": ["k", None, float("nan")]})
    out = grouping.with_roles(own, "layer", lambda n: (99, "never asked"))
    assert out["layer_index"].tolist() == [4, pd.NA, 5] and out["role"].tolist() == ["k", None, None]
    a = graphnn.analyse(graphnn.extract(seeded(MLP)), spectral=False)
    assert grouping.with_roles(a.layers, "layer", grouping.partition_role_function(a.layers)) is None
    assert not grouping.is_layered(None)
