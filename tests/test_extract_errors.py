"""Every bad input raises its specific error, with a message that says what to do."""

import pathlib
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from safetensors.torch import save_file

import graphnn
from graphnn.graph import count_nonfinite
from models import LeNet, seeded


class WritesAFile:
    """Unpickling this object writes a file (what a malicious checkpoint could do)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), "code ran"))


def test_missing_path(tmp_path):
    with pytest.raises(graphnn.CheckpointNotFoundError, match="no such file"):
        graphnn.extract(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for generic handlers
        graphnn.extract(str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    sd = seeded(LeNet).state_dict()
    good = tmp_path / f"good{suffix}"
    (torch.save(sd, good) if suffix == ".pt" else save_file(sd, good))
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(graphnn.CorruptCheckpointError, match="truncated"):
        graphnn.extract(bad)


def test_garbage_file(tmp_path):
    bad = tmp_path / "noise.bin"
    bad.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(graphnn.CorruptCheckpointError, match="could not read"):
        graphnn.extract(bad)


def test_unsafe_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    ckpt = tmp_path / "evil.pt"
    torch.save({"state_dict": seeded(LeNet).state_dict(), "extra": WritesAFile(str(marker))}, ckpt)
    with pytest.raises(graphnn.UnsafeCheckpointError, match="trust=True") as err:
        graphnn.extract(ckpt)
    assert "run code" in str(err.value)
    assert not marker.exists()
    # the explicit opt-in loads it (and, as the message warns, runs its code)
    g = graphnn.extract(ckpt, trust=True)
    assert "fc1.weight" in g.blocks
    assert marker.exists()


def test_nothing_mappable_lists_what_was_seen():
    sd = {"norm.weight": torch.ones(4), "norm.bias": torch.zeros(4), "steps": torch.tensor(3)}
    with pytest.raises(graphnn.NothingMappableError) as err:
        graphnn.extract(sd)
    msg = str(err.value)
    for name in sd:
        assert name in msg
    assert "not an edge" in msg and "integer" in msg


def test_nothing_mappable_after_exclude():
    with pytest.raises(graphnn.NothingMappableError, match="exclude"):
        graphnn.extract(seeded(LeNet), exclude="*")


def test_nonfinite_weights_warn_and_are_counted():
    m = seeded(LeNet)
    with torch.no_grad():
        m.fc2.weight[0, :3] = float("nan")
        m.conv1.weight[0, 0, 0, 0] = float("inf")
    with pytest.warns(graphnn.NonFiniteWeightsWarning) as rec:
        g = graphnn.extract(m)
    assert {str(w.message).split(":")[0] for w in rec} == {"fc2.weight", "conv1.weight"}
    cov = g.coverage.set_index("name")
    assert cov.loc["fc2.weight", "nonfinite"] == 3
    assert cov.loc["conv1.weight", "nonfinite"] == 1
    assert cov.loc["fc1.weight", "nonfinite"] == 0


def test_unsupported_source_type():
    with pytest.raises(graphnn.UnsupportedSourceError, match="nn.Module, a state_dict"):
        graphnn.extract(42)


def test_folder_without_weights(tmp_path):
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(graphnn.CorruptCheckpointError, match="model.safetensors.index.json"):
        graphnn.extract(tmp_path)


def test_index_with_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"a.weight": "gone.safetensors"}}')
    with pytest.raises(graphnn.CorruptCheckpointError, match="missing"):
        graphnn.extract(tmp_path)


def test_bad_conv_option():
    with pytest.raises(ValueError, match="l2, l1, sum"):
        graphnn.extract(seeded(LeNet), conv="max")


# -- count_nonfinite: exact and cheap -------------------------------------------------------
def brute_nonfinite(t):
    return int((~torch.isfinite(t.double())).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_conv_of_huge_finite_weights_is_not_reported_nonfinite(dtype):
    """1e38 (float32) or 6e4 (float16) everywhere: every sum in the tensor's dtype overflows to
    Inf, yet there is no NaN/Inf weight."""
    big = {torch.float32: 1e38, torch.float16: 6e4, torch.bfloat16: 3e38}[dtype]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)).to(dtype)
    with torch.no_grad():
        net[0].weight.fill_(big)
    assert not torch.isfinite(net[0].weight.sum())  # the cheap check alone would say NaN/Inf
    with warnings.catch_warnings():
        warnings.simplefilter("error", graphnn.NonFiniteWeightsWarning)
        g = graphnn.extract(net)
    assert g.coverage.set_index("name").loc["0.weight", "nonfinite"] == 0
    with torch.no_grad():
        net[0].weight[1, 2, 0, 1] = float("nan")
        net[0].weight[7, 0, 2, 2] = float("-inf")
    with pytest.warns(graphnn.NonFiniteWeightsWarning, match="0.weight: 2 NaN/Inf"):
        g = graphnn.extract(net)
    assert g.coverage.set_index("name").loc["0.weight", "nonfinite"] == 2


@pytest.mark.parametrize("conv", ["l2", "l1", "sum"])
def test_huge_finite_conv_weights_analyse_with_their_true_aggregate(conv):
    """float32 weights of 1e38: the kernel aggregate overflows float32 (3e38 for l2 just fits,
    9e38 for l1/sum does not), so it is computed in float64, and analyse runs on finite values."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[0].weight.fill_(1e38)
    g = graphnn.extract(net, conv=conv)
    m = g.blocks["0.weight"].matrix()
    expected = {"l2": 3e38, "l1": 9e38, "sum": 9e38}[conv]  # 9 kernel entries of 1e38, by hand
    assert torch.allclose(m.double(), torch.full((8, 3), expected, dtype=torch.float64), rtol=1e-6)
    a = graphnn.analyse(g)
    assert np.isfinite(a.neurons["strength"]).all() and np.isfinite(a.neurons["centrality"]).all()


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e5m2, torch.float8_e4m3fn]


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(DTYPES), rows=st.integers(1, 9), cols=st.integers(1, 9),
       specials=st.lists(st.tuples(st.integers(0, 80), st.sampled_from(["nan", "inf", "-inf", "huge"])), max_size=12),
       chunk=st.integers(1, 20), transpose=st.booleans(), seed=st.integers(0, 2**16))
def test_count_nonfinite_matches_brute_force(dtype, rows, cols, specials, chunk, transpose, seed):
    base = torch.float64 if dtype == torch.float64 else torch.float32  # holds finfo(dtype).max
    t = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=base)
    huge = torch.finfo(dtype).max / 2
    for pos, kind in specials:
        t.view(-1)[pos % t.numel()] = huge if kind == "huge" else float(kind)
    t = t.to(dtype)
    if transpose:
        t = t.T  # not contiguous
    assert count_nonfinite(t, chunk=chunk) == brute_nonfinite(t)
    assert count_nonfinite(t) == brute_nonfinite(t)


def test_count_nonfinite_special_tensors():
    t = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    assert count_nonfinite(t.to_sparse()) == 2
    assert count_nonfinite(torch.empty(3, 3, device="meta")) == 0  # no values, hence no NaN
    assert count_nonfinite(torch.empty(0, 5)) == 0
    assert count_nonfinite(torch.tensor([1, 2, 3])) == 0  # integers are always finite
    assert count_nonfinite(torch.tensor(float("nan"))) == 1  # 0-d


class RecordedOps(torch.overrides.TorchFunctionMode):
    """Every torch function and Tensor method called, with the sizes of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        sizes = [a.numel() for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((getattr(func, "__name__", str(func)), sizes, kwargs))
        return func(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_count_nonfinite_of_finite_weights_is_one_sum_in_their_dtype(dtype):
    """No float64 copy or float64 accumulation (21x the cost, issue 11) and no elementwise
    isfinite pass when the plain sum is finite."""
    t = torch.randn(64, 32, 3, 3).to(dtype)
    with RecordedOps() as rec:
        assert count_nonfinite(t) == 0
    metadata = {"is_floating_point", "__get__", "numel", "dim", "is_contiguous", "size"}
    full = [(name, kw) for name, sizes, kw in rec.calls if t.numel() in sizes and name not in metadata]
    assert [name for name, _ in full] == ["sum"], rec.calls
    assert all("dtype" not in kw for _, kw in full)
    assert not any(name in ("to", "double", "float", "type") for name, _, _ in rec.calls)


def test_a_zero_size_layer_in_a_module_is_skipped_with_its_reason():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "Initializing zero-element tensors is a no-op"
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 0))
    g = graphnn.extract(m)
    cov = g.coverage.set_index("name")
    assert cov.loc["2.weight", "status"] == "skipped" and "empty tensor" in cov.loc["2.weight", "reason"]
    assert list(g.blocks) == ["0.weight"] and g.num_edges == 12
    assert graphnn.rewire.rewirable_weights(m) == ["0.weight"]
