"""The one validation layer (graphnn.validation) and the library's use of it: every bad option
of an analysis, a report or a re-initialiser raises InvalidParameterError (a ValueError) whose
message names the option and the bad value; good values pass through unchanged. Output paths:
an input is never an output (same path, symlink, hard link, a file of an input folder, a folder
that contains an input); an existing output only with overwrite."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import graphnn
from graphnn.errors import InvalidParameterError, RefusedOverwriteError
from graphnn.validation import check_bool, check_choice, check_device, check_number, check_output, check_seed
from random_graphs import random_mlp


# -- the checks themselves ----------------------------------------------------------------------
def test_invalid_parameter_error_is_a_value_error():
    assert issubclass(InvalidParameterError, ValueError)
    assert issubclass(InvalidParameterError, graphnn.GraphnnError)


@pytest.mark.parametrize("value", ["both", "", None, 1, ["in"], True])
def test_check_choice_refuses_and_lists_the_choices(value):
    with pytest.raises(InvalidParameterError) as e:
        check_choice("direction", value, ("in", "out", "total"))
    msg = str(e.value)
    assert msg.startswith("direction must be one of 'in', 'out' or 'total'") and repr(value) in msg


def test_check_choice_passes_good_values_and_keeps_bool_apart_from_int():
    assert check_choice("mode", "fast", ("faithful", "fast")) == "fast"
    assert check_choice("k", 1, (1, 2)) == 1
    with pytest.raises(InvalidParameterError):
        check_choice("k", True, (1, 2))  # True == 1, but a bool is not the integer option


@pytest.mark.parametrize("value, kw, fragment", [
    (math.inf, {"nonnegative": True}, "non-negative finite number"),
    (-math.inf, {}, "finite number"),
    (math.nan, {}, "finite number"),
    (math.nan, {"finite": False}, "number"),
    (-1, {"nonnegative": True}, "non-negative"),
    (0, {"positive": True, "high": 1}, "0 < top <= 1"),
    (1.5, {"positive": True, "high": 1}, "0 < top <= 1"),
    (2.0, {"integer": True}, "integer"),
    (True, {}, "number"),
    ("0.5", {}, "number"),
    (torch.tensor(0.5), {}, "number"),
    (5, {"low": 1, "high": 3}, "1 <= top <= 3"),
    (None, {}, "number"),
])
def test_check_number_refuses(value, kw, fragment):
    with pytest.raises(InvalidParameterError) as e:
        check_number("top", value, **kw)
    assert str(e.value).startswith("top must be ") and fragment in str(e.value) and repr(value) in str(e.value)


def test_check_number_passes_good_values():
    assert check_number("gamma", 0, nonnegative=True) == 0
    assert check_number("gamma", 2.5, nonnegative=True) == 2.5
    assert check_number("top", 1, positive=True, high=1) == 1
    assert check_number("x", math.inf, finite=False) == math.inf
    assert check_number("tol", None, allow_none=True) is None
    n = check_number("trials", np.int64(7), integer=True, positive=True)
    assert n == 7 and type(n) is int
    assert check_number("x", np.float32(0.25)) == np.float32(0.25)


@pytest.mark.parametrize("value", [-1, True, 1.0, "3", np.float64(2)])
def test_check_seed_refuses(value):
    with pytest.raises(InvalidParameterError, match="seed must be a non-negative integer"):
        check_seed("seed", value)


def test_check_seed_and_bool_pass_good_values():
    assert check_seed("seed", None) is None and check_seed("seed", np.int32(3)) == 3 and check_seed("s", 0) == 0
    assert check_bool("signed", False) is False and check_bool("signed", np.bool_(True)) is True
    for bad in ("no", 0, None):
        with pytest.raises(InvalidParameterError, match="signed must be True or False"):
            check_bool("signed", bad)


def test_check_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert check_device("auto").type == expected and check_device(None).type == expected
    assert check_device("cpu") == torch.device("cpu") and check_device(torch.device("cpu")) == torch.device("cpu")
    for bad, fragment in [("tpu", "is not a device"), ("meta", "'cpu' or 'cuda' only"), (3, "give 'auto'"),
                          ("cuda:x", "is not a device")]:
        with pytest.raises(InvalidParameterError, match=fragment):
            check_device(bad)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert check_device(f"cuda:{n - 1}").index == n - 1
        with pytest.raises(InvalidParameterError, match="CUDA device"):
            check_device(f"cuda:{n}")
    else:
        for bad in ("cuda", "cuda:0", torch.device("cuda")):
            with pytest.raises(InvalidParameterError, match="CUDA is not available"):
                check_device(bad)


def test_the_old_device_helpers_are_the_one_check():
    from graphnn.analyses._blocks import resolve_device
    from graphnn.rewire.pa import _check_device

    assert resolve_device("auto") == check_device("auto")
    with pytest.raises(InvalidParameterError):
        resolve_device("tpu")
    assert _check_device("auto", "fast") == "auto" and _check_device("cpu", "faithful") == "cpu"
    with pytest.raises(InvalidParameterError, match="mode='fast'"):
        _check_device("cuda", "faithful")
    with pytest.raises(InvalidParameterError, match="is not a device"):
        _check_device("tpu", "fast")


# -- every bad option of the library ------------------------------------------------------------
def _unrelated_analyses():
    def fake(names):
        return SimpleNamespace(layers=pd.DataFrame({"layer": names, "size": [1] * len(names),
                                                    "strength_mean": [0.0] * len(names)}))
    return {"a": fake(["input", "fc1", "fc2"]), "b": fake(["input", "conv1"])}


@pytest.fixture(scope="module")
def g():
    return random_mlp([4, 3, 2])


BAD_OPTIONS = [
    ("strength direction", lambda g: graphnn.strength(g, "both"), "direction"),
    ("strength signed", lambda g: graphnn.strength(g, signed="no"), "signed"),
    ("strength_variance view", lambda g: graphnn.strength_variance(g, view="neuron"), "view"),
    ("hypercore scope", lambda g: graphnn.hypercore(g, scope="layer"), "scope"),
    ("hypercore top", lambda g: graphnn.hypercore(g, top=0), "top"),
    ("hypercore top nan", lambda g: graphnn.hypercore(g, top=math.nan), "top"),
    ("hypercore threshold", lambda g: graphnn.hypercore(g, threshold=-1), "threshold"),
    ("hypercore threshold inf", lambda g: graphnn.hypercore(g, threshold=math.inf), "threshold"),
    ("hypercore both", lambda g: graphnn.hypercore(g, threshold=0.1, top=0.5), "not both"),
    ("hypercore device", lambda g: graphnn.hypercore(g, device="tpu"), "device"),
    ("hypercore dtype", lambda g: graphnn.hypercore(g, dtype=torch.int64), "dtype"),
    ("centrality normalise", lambda g: graphnn.eigenvector_centrality(g, normalise="sum"), "normalise"),
    ("analyse core_scope", lambda g: graphnn.analyse(g, core_scope="layer"), "core_scope"),
    ("analyse flag", lambda g: graphnn.analyse(g, centrality="yes"), "centrality"),
    ("analyse device", lambda g: graphnn.analyse(g, device="gpu7"), "device"),
    ("pa seed", lambda g: graphnn.rewire.pa_rewire_(torch.randn(3, 3), seed=-1), "seed"),
    ("pa seed bool", lambda g: graphnn.rewire.pa_rewire_(torch.randn(3, 3), seed=True), "seed"),
    ("pa mode", lambda g: graphnn.rewire.pa_rewire_(torch.randn(3, 3), mode="quick"), "mode"),
    ("pa device", lambda g: graphnn.rewire.pa_rewire_(torch.randn(3, 3), mode="fast", device="tpu"), "device"),
    ("pa faithful on a GPU", lambda g: graphnn.rewire.pa_rewire_(torch.randn(3, 3), device="cuda"), "faithful"),
    ("variance search trials", lambda g: graphnn.rewire.min_strength_variance_search_(torch.empty(3, 3), trials=0),
     "trials"),
    ("variance search trials float", lambda g: graphnn.rewire.min_strength_variance_search_(torch.empty(3, 3),
                                                                                         trials=2.0), "trials"),
    ("hcore gamma inf", lambda g: graphnn.rewire.hcore_reinit_(nn.Linear(3, 2), gamma=math.inf), "gamma"),
    ("hcore gamma nan", lambda g: graphnn.rewire.hcore_reinit_(nn.Linear(3, 2), gamma=math.nan), "gamma"),
    ("hcore gamma negative", lambda g: graphnn.rewire.hcore_reinit_(nn.Linear(3, 2), gamma=-1), "gamma"),
    ("hcore scope", lambda g: graphnn.rewire.hcore_reinit_(nn.Linear(3, 2), scope="layer"), "scope"),
    ("rank match group", lambda g: graphnn.rewire.rank_match_(torch.zeros(2, 3), torch.zeros(2, 3), group="row"),
     "group"),
    ("hcore cores table", lambda g: graphnn.rewire.hcore_reinit_(nn.Linear(3, 2), cores=pd.DataFrame({"x": [1]})),
     "cores must be a DataFrame"),
    ("hcore cores rows", lambda g: graphnn.rewire.hcore_reinit_(
        nn.Linear(3, 2), cores=pd.DataFrame({"layer": ["input"], "neuron": [0], "core": [1.0]})), "rows for partition"),
    ("rank match shapes", lambda g: graphnn.rewire.rank_match_(torch.zeros(2, 3), torch.zeros(3, 2)), "shape"),
    ("compare one analysis", lambda g: _compare({"a": graphnn.analyse(g)}), "at least two"),
    ("compare unrelated models", lambda g: _compare(_unrelated_analyses()), "share no layer name"),
    ("comparison report mode", lambda g: _render({"a": graphnn.analyse(g), "b": graphnn.analyse(g)}), "mode"),
    ("compare labels", lambda g: _compare_files(["a.pt", "b.pt"], ["x"]), "labels"),
]


def _compare(analyses):
    from graphnn.report.compare import compare_layers

    return compare_layers(analyses)


def _render(analyses):
    from graphnn.report.html import render_comparison

    return render_comparison(analyses, {}, mode="diff")


def _compare_files(paths, labels):
    from graphnn.report.pipeline import compare_files

    return compare_files(paths, labels=labels)


@pytest.mark.parametrize("name, call, fragment", BAD_OPTIONS, ids=[b[0] for b in BAD_OPTIONS])
def test_every_bad_option_is_an_invalid_parameter_error(g, name, call, fragment):
    with pytest.raises(InvalidParameterError) as e:
        call(g)
    assert fragment in str(e.value)


def test_related_checkpoints_still_compare():
    from graphnn.report.compare import check_related, compare_layers

    a = graphnn.analyse(random_mlp([4, 3, 2], seed=0))
    b = graphnn.analyse(random_mlp([4, 3, 2], seed=1))
    check_related({"a": a, "b": b})
    wide = compare_layers({"a": a, "b": b})
    assert set(wide["layer"]) == set(a.layers["layer"])


# -- output paths ---------------------------------------------------------------------------------
@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model.safetensors").write_bytes(b"shard")
    (tmp_path / "exists.csv").write_text("old")
    return tmp_path


def test_an_input_is_never_an_output(tree):
    src = tree / "model.pt"
    os.symlink(src, tree / "link.csv")
    os.link(src, tree / "hard.csv")
    cases = [
        (src, [src]),
        (tree / "." / "model.pt", [src]),                          # another spelling of the path
        (tree / "link.csv", [src]),                                 # a symlink to the input
        (tree / "hard.csv", [src]),                                 # a hard link: same st_dev/st_ino
        (tree / "folder" / "model.safetensors", [tree / "folder"]),  # a file of the input folder
    ]
    for out, inputs in cases:
        for overwrite in (False, True):
            with pytest.raises(RefusedOverwriteError, match="never writes over its input"):
                check_output(out, inputs, overwrite=overwrite)
    with pytest.raises(RefusedOverwriteError, match="contains the input"):
        check_output(tree, [tree / "folder"], overwrite=True, kind="folder")
    assert src.read_bytes() == b"weights"


def test_existing_outputs_need_overwrite(tree):
    with pytest.raises(RefusedOverwriteError, match="already exists") as e:
        check_output(tree / "exists.csv", [tree / "model.pt"])
    assert "overwrite=True" in str(e.value)
    with pytest.raises(RefusedOverwriteError, match="--overwrite"):
        check_output(tree / "exists.csv", [], overwrite_hint="--overwrite")
    assert check_output(tree / "exists.csv", [tree / "model.pt"], overwrite=True) == tree / "exists.csv"
    assert check_output(tree / "new.csv", [tree / "model.pt"]) == tree / "new.csv"
    assert check_output(tree / "folder" / "new.csv", [tree / "folder"]) == tree / "folder" / "new.csv"
    with pytest.raises(InvalidParameterError, match="is a folder"):
        check_output(tree / "folder", [], overwrite=True)
    with pytest.raises(InvalidParameterError, match="is a file"):
        check_output(tree / "exists.csv", [], overwrite=True, kind="folder")
    with pytest.raises(InvalidParameterError, match="kind"):
        check_output(tree / "x", [], kind="dir")
