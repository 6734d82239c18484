"""Checkpoint files and folders written by a hostile user: nothing outside the folder is read,
no FIFO or device is opened, a file is never read beyond its header, and every bad file or
index ends in a :class:`CorruptCheckpointError` that says what is wrong and what to do."""

import json
import os
import stat
import struct
import threading
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import graphnn
from graphnn.cli import app
from graphnn.errors import CheckpointWarning, CorruptCheckpointError

INDEX = "model.safetensors.index.json"


def small_sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"fc1.weight": torch.randn(6, 4, generator=g), "fc2.weight": torch.randn(3, 6, generator=g)}


def write_index(folder: Path, weight_map, name=INDEX):
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def sharded(folder: Path, sd=None) -> Path:
    """A valid two-shard folder: fc1 in shard 1, fc2 in shard 2."""
    sd = small_sd() if sd is None else sd
    folder.mkdir(exist_ok=True)
    save_file({"fc1.weight": sd["fc1.weight"]}, folder / "model-00001-of-00002.safetensors")
    save_file({"fc2.weight": sd["fc2.weight"]}, folder / "model-00002-of-00002.safetensors")
    write_index(folder, {"fc1.weight": "model-00001-of-00002.safetensors",
                         "fc2.weight": "model-00002-of-00002.safetensors"})
    return folder


class OpenedFiles:
    """Records every path given to ``safetensors.safe_open`` and to ``torch.load``."""

    def __init__(self, monkeypatch):
        import safetensors

        self.paths = []
        real_open, real_load = safetensors.safe_open, torch.load

        def safe_open(path, *a, **k):
            self.paths.append(os.path.realpath(path))
            return real_open(path, *a, **k)

        def load(path, *a, **k):
            self.paths.append(os.path.realpath(path))
            return real_load(path, *a, **k)

        monkeypatch.setattr(safetensors, "safe_open", safe_open)
        monkeypatch.setattr(torch, "load", load)


# -- reads outside the folder -------------------------------------------------------------
@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABSOLUTE", "/etc/passwd", "/dev/zero",
                                   "sub/../../outside.safetensors"])
def test_index_cannot_name_a_file_outside_the_folder(tmp_path, monkeypatch, shard):
    outside = tmp_path / "outside.safetensors"
    save_file(small_sd(1), outside)
    folder = sharded(tmp_path / "model")
    (folder / "sub").mkdir()
    shard = str(outside) if shard == "ABSOLUTE" else shard
    write_index(folder, {"fc1.weight": "model-00001-of-00002.safetensors", "fc2.weight": shard})
    opened = OpenedFiles(monkeypatch)
    with pytest.raises(CorruptCheckpointError, match="outside the model folder") as err:
        graphnn.extract(folder)
    assert repr(shard) in str(err.value) and "source you trust" in str(err.value)
    assert not any(p.startswith(str(tmp_path / "outside")) or p.startswith("/dev") or p.startswith("/etc")
                   for p in opened.paths), opened.paths


def test_symlinked_shard_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "weights.safetensors"
    outside.parent.mkdir()
    save_file(small_sd(1), outside)
    folder = sharded(tmp_path / "model")
    (folder / "model-00002-of-00002.safetensors").unlink()
    (folder / "model-00002-of-00002.safetensors").symlink_to(outside)
    with pytest.raises(CorruptCheckpointError, match="a link to .*outside the model folder"):
        graphnn.extract(folder)
    # the single-file layout is checked the same way
    single = tmp_path / "single"
    single.mkdir()
    (single / "model.safetensors").symlink_to(outside)
    with pytest.raises(CorruptCheckpointError, match="is a link to .*outside the model folder"):
        graphnn.extract(single)
    # and so is the index file itself
    link_index = tmp_path / "link_index"
    link_index.mkdir()
    (link_index / INDEX).symlink_to(folder / INDEX)
    with pytest.raises(CorruptCheckpointError, match="outside the model folder"):
        graphnn.extract(link_index)


def test_links_inside_the_folder_and_the_hf_cache_layout_are_followed(tmp_path):
    sd = small_sd()
    want = graphnn.extract(dict(sd))
    # a link to a file in a subfolder of the model folder
    folder = sharded(tmp_path / "model", sd)
    (folder / "blobs").mkdir()
    os.replace(folder / "model-00002-of-00002.safetensors", folder / "blobs" / "b2")
    (folder / "model-00002-of-00002.safetensors").symlink_to("blobs/b2")
    got = graphnn.extract(folder)
    assert {n: b.matrix() for n, b in got.blocks.items()}.keys() == want.blocks.keys()
    assert torch.equal(got.blocks["fc2.weight"].matrix(), sd["fc2.weight"])
    # the Hugging Face cache: snapshots/<revision>/<file> -> ../../blobs/<hash>
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", INDEX):
        blob = repo / "blobs" / f"hash-{name[:14]}"
        os.replace(os.path.realpath(folder / name), blob)
        (snap / name).symlink_to(Path("..", "..", "blobs", blob.name))
    got = graphnn.extract(snap)
    for name, b in want.blocks.items():
        assert torch.equal(got.blocks[name].matrix(), b.matrix()), name


class FifoWatch:
    """A FIFO at ``path`` and a writer thread that tells whether anything opened it for reading
    (a blocking reader would hang the test forever without this writer)."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path = path
        self.opened_by_code = threading.Event()
        self._ours = threading.Event()
        self._thread = threading.Thread(target=self._write_end, daemon=True)
        self._thread.start()

    def _write_end(self):
        fd = os.open(self.path, os.O_WRONLY)  # returns once some reader opens the FIFO
        if not self._ours.is_set():
            self.opened_by_code.set()
        os.close(fd)

    def close(self) -> bool:
        """Unblock the writer; ``True`` if the code under test had opened the FIFO."""
        self._ours.set()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join(5)
        os.close(fd)
        return self.opened_by_code.is_set()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "weights"])
def test_fifo_checkpoint_is_refused_without_opening_it(tmp_path, name):
    watch = FifoWatch(tmp_path / name)
    try:
        with pytest.raises(CorruptCheckpointError, match="FIFO .*not a regular file"):
            graphnn.extract(tmp_path / name)
        with pytest.raises(CorruptCheckpointError, match="FIFO"):
            graphnn.extract.torch_load(tmp_path / name)
    finally:
        assert not watch.close(), "the FIFO was opened for reading"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_shard_is_refused_without_opening_it(tmp_path):
    folder = sharded(tmp_path / "model")
    (folder / "model-00002-of-00002.safetensors").unlink()
    watch = FifoWatch(folder / "model-00002-of-00002.safetensors")
    try:
        with pytest.raises(CorruptCheckpointError, match="FIFO"):
            graphnn.extract(folder)
    finally:
        assert not watch.close(), "the FIFO was opened for reading"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_index_is_refused_without_opening_it(tmp_path):
    folder = sharded(tmp_path / "model")
    (folder / INDEX).unlink()
    watch = FifoWatch(folder / INDEX)
    try:
        with pytest.raises(CorruptCheckpointError, match="index file .*FIFO"):
            graphnn.extract(folder)
    finally:
        assert not watch.close(), "the FIFO was opened for reading"


def test_oversized_index_is_refused_before_reading(tmp_path, monkeypatch):
    from graphnn.extract import checkpoints

    folder = sharded(tmp_path / "model")
    monkeypatch.setattr(checkpoints, "MAX_INDEX_BYTES", 64)
    with pytest.raises(CorruptCheckpointError, match="more than any real index file"):
        graphnn.extract(folder)


@pytest.mark.skipif(not os.path.exists("/dev/zero") or not stat.S_ISCHR(os.stat("/dev/zero").st_mode),
                    reason="needs /dev/zero")
def test_device_as_checkpoint_or_linked_shard_is_refused(tmp_path):
    for path in ("/dev/zero", tmp_path / "zero.safetensors"):
        if path != "/dev/zero":
            path.symlink_to("/dev/zero")
        with pytest.raises(CorruptCheckpointError, match="character device, not a regular file"):
            graphnn.extract(path)


# -- hostile safetensors headers ----------------------------------------------------------
def raw_safetensors(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return path


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
HOSTILE_HEADERS = {
    "header length beyond the file": (dict(a=F32_2x2), b"\0" * 16, 10**6),
    "header length 2**63": (dict(a=F32_2x2), b"\0" * 16, 2**63),
    "huge shape, small offsets": ({"a": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}}, b"\0" * 16, None),
    "shape whose size overflows": ({"a": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}, b"\0" * 16, None),
    "overlapping offsets": ({"a": F32_2x2, "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}, b"\0" * 24, None),
    "offsets beyond the data": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8, None),
    "offsets larger than the shape": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 1600]}}, b"\0" * 1600, None),
    "a gap before the data": ({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [4, 20]}}, b"\0" * 20, None),
    "unknown dtype": ({"a": {"dtype": "F99", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 16, None),
    "negative shape": ({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, b"\0" * 16, None),
    "non-JSON header": (b"this is not json", b"", None),
    "header is a list": (b"[1, 2, 3]", b"", None),
    "data after the last tensor": (dict(a=F32_2x2), b"\0" * 64, None),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_safetensors_header_is_a_corrupt_checkpoint(tmp_path, case):
    header, data, length = HOSTILE_HEADERS[case]
    path = raw_safetensors(tmp_path / "hostile.safetensors", header, data, length)
    with pytest.raises(CorruptCheckpointError) as err:
        graphnn.extract(path)
    msg = str(err.value)
    assert str(path) in msg and "re-download or re-save" in msg
    # the same inside a sharded folder
    folder = tmp_path / "model"
    folder.mkdir()
    os.replace(path, folder / "s.safetensors")
    write_index(folder, {"a": "s.safetensors"})
    with pytest.raises(CorruptCheckpointError, match="s.safetensors"):
        graphnn.extract(folder)


def test_shorter_than_the_length_prefix(tmp_path):
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CorruptCheckpointError, match="tiny.safetensors"):
        graphnn.extract(tmp_path / "tiny.safetensors")


def test_header_length_beyond_the_file_allocates_nothing(tmp_path):
    """A header that claims 2 GB in a 40-byte file is refused before anything that size exists."""
    import resource

    path = raw_safetensors(tmp_path / "claims.safetensors", dict(a=F32_2x2), b"\0" * 16, 2 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CorruptCheckpointError):
        graphnn.extract(path)
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kib < 256 * 1024


# -- malformed index files ----------------------------------------------------------------
MALFORMED_INDEXES = {
    "not JSON": (b"{ weight_map: oops", "not JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "not JSON"),
    "top level a list": (b'[{"weight_map": {}}]', "top level is a list"),
    "no weight_map": (b'{"metadata": {"total_size": 3}}', "no 'weight_map' key"),
    "weight_map a list": (b'{"weight_map": ["model-00001-of-00002.safetensors"]}', "'weight_map' is a list"),
    "weight_map a string": (b'{"weight_map": "model-00001-of-00002.safetensors"}', "'weight_map' is a string"),
    "integer value": (b'{"weight_map": {"fc1.weight": 1}}', "maps 'fc1.weight' to 1 \\(a number\\)"),
    "null value": (b'{"weight_map": {"fc1.weight": null}}', "maps 'fc1.weight' to None \\(a null\\)"),
    "nested object value": (b'{"weight_map": {"fc1.weight": {"file": "x"}}}', "maps 'fc1.weight' to"),
    "empty weight_map": (b'{"weight_map": {}}', "'weight_map' is empty"),
    "deeply nested": (b"[" * 100000 + b"]" * 100000, "not JSON|top level"),
    "one tensor mapped to two shards": (
        b'{"weight_map": {"fc1.weight": "model-00001-of-00002.safetensors", '
        b'"fc2.weight": "model-00002-of-00002.safetensors", "fc1.weight": "model-00002-of-00002.safetensors"}}',
        "lists 'fc1.weight' twice"),
}


@pytest.mark.parametrize("case", list(MALFORMED_INDEXES))
def test_malformed_index_says_what_is_wrong(tmp_path, case):
    text, why = MALFORMED_INDEXES[case]
    folder = sharded(tmp_path / "model")
    (folder / INDEX).write_bytes(text)
    with pytest.raises(CorruptCheckpointError, match=why) as err:
        graphnn.extract(folder)
    assert "not a valid index file" in str(err.value) and "save_pretrained" in str(err.value)


def test_malformed_index_exits_1_from_the_cli_with_the_message(tmp_path):
    folder = sharded(tmp_path / "model")
    (folder / INDEX).write_text('{"weight_map": ["a", "b"]}')
    result = CliRunner().invoke(app, ["describe", str(folder)])
    out = result.output + (getattr(result, "stderr", "") or "")
    assert result.exit_code == 1, out
    assert "'weight_map' is a list" in out and "unexpected" not in out


def test_same_tensor_twice_in_the_index_to_one_shard_is_accepted(tmp_path):
    folder = sharded(tmp_path / "model")
    (folder / INDEX).write_text('{"weight_map": {"fc1.weight": "model-00001-of-00002.safetensors", '
                                '"fc2.weight": "model-00002-of-00002.safetensors", '
                                '"fc1.weight": "model-00001-of-00002.safetensors"}}')
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert set(graphnn.extract(folder).blocks) == {"fc1.weight", "fc2.weight"}


# -- duplicates -----------------------------------------------------------------------------
def test_tensor_in_two_shards_warns_and_reads_the_indexed_copy(tmp_path):
    sd = small_sd()
    folder = sharded(tmp_path / "model", sd)
    other = torch.full_like(sd["fc1.weight"], 7.0)
    save_file({"fc1.weight": other, "fc2.weight": sd["fc2.weight"]}, folder / "model-00002-of-00002.safetensors")
    with pytest.warns(CheckpointWarning) as rec:
        g = graphnn.extract(folder)
    msg = " ".join(str(w.message) for w in rec)
    assert "'fc1.weight' in model-00001-of-00002.safetensors, model-00002-of-00002.safetensors" in msg
    assert "(used: model-00001-of-00002.safetensors)" in msg
    assert torch.equal(g.blocks["fc1.weight"].matrix(), sd["fc1.weight"])
    # the index decides: map fc1 to shard 2 (and fc2 to shard 1) and shard 2's copy of fc1 is read
    save_file(sd, folder / "model-00001-of-00002.safetensors")
    write_index(folder, {"fc1.weight": "model-00002-of-00002.safetensors", "fc2.weight": "model-00001-of-00002.safetensors"})
    with pytest.warns(CheckpointWarning, match=r"2 tensor\(s\) .*'fc1.weight' in .* \(used: model-00002-of-00002"):
        g = graphnn.extract(folder)
    assert torch.equal(g.blocks["fc1.weight"].matrix(), other)


def test_tensors_missing_from_the_index_are_ignored_with_a_warning(tmp_path):
    folder = sharded(tmp_path / "model")
    save_file({"fc2.weight": small_sd()["fc2.weight"], "extra.weight": torch.ones(2, 3)},
              folder / "model-00002-of-00002.safetensors")
    with pytest.warns(CheckpointWarning, match=r"1 tensor\(s\) .* not listed in .* ignored: 'extra.weight'"):
        g = graphnn.extract(folder)
    assert "extra.weight" not in g.coverage["name"].tolist()


def test_one_shard_under_two_spellings_is_read_once(tmp_path, monkeypatch):
    sd = small_sd()
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(sd, folder / "model.safetensors")
    (folder / "alias.safetensors").symlink_to("model.safetensors")
    write_index(folder, {"fc1.weight": "model.safetensors", "fc2.weight": "./alias.safetensors"})
    opened = OpenedFiles(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        g = graphnn.extract(folder)
        for name, b in g.blocks.items():
            assert torch.equal(b.matrix(), sd[name])
    assert opened.paths == [str((folder / "model.safetensors").resolve())]


def test_pickle_shards_follow_the_same_rules(tmp_path):
    sd = small_sd()
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save({"fc1.weight": sd["fc1.weight"]}, folder / "pytorch_model-00001-of-00002.bin")
    torch.save({"fc2.weight": sd["fc2.weight"]}, folder / "pytorch_model-00002-of-00002.bin")
    write_index(folder, {"fc1.weight": "pytorch_model-00001-of-00002.bin", "fc2.weight": "../x.bin"},
                name="pytorch_model.bin.index.json")
    with pytest.raises(CorruptCheckpointError, match="outside the model folder"):
        graphnn.extract(folder)
    (folder / "pytorch_model.bin.index.json").write_text('{"weight_map": {"fc1.weight": 3}}')
    with pytest.raises(CorruptCheckpointError, match="not a valid index file"):
        graphnn.extract(folder)
    write_index(folder, {"fc1.weight": "pytorch_model-00001-of-00002.bin", "fc2.weight": "pytorch_model-00002-of-00002.bin"},
                name="pytorch_model.bin.index.json")
    g = graphnn.extract(folder)
    assert torch.equal(g.blocks["fc2.weight"].matrix(), sd["fc2.weight"])
    assert load_file is not None  # (safetensors reader imported for symmetry with the other tests)
