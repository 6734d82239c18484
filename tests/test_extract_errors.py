"""Every bad input raises its specific error, with a message that says what to do."""

import pathlib

import pytest
import torch
from safetensors.torch import save_file

import graphnn
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
