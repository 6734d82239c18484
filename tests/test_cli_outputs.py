"""Outputs that never lose data, and a command line that ends cleanly.

graphnn.atomic: an output appears whole or not at all; without overwrite it is published
exclusively (of two racing writers exactly one wins); a writer killed with SIGKILL leaves a
recognisable partial that the next write removes. The CLI: no command writes over one of its
inputs (by path, symlink, hard link, or into an input folder), an existing output is replaced
only with --overwrite, misuse exits 2 with a message that helps (and the names it suggests
work), a full disk or a read-only folder exits 1 with no partial output, a closed stdout and
Ctrl-C end quietly. Pure option checks run in process; signals, pipes and kills in subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import graphnn
from graphnn.atomic import PARTIAL_MARK, atomic_folder, atomic_write, remove_stale_partials
from graphnn.cli import app
from graphnn.errors import RefusedOverwriteError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "COLUMNS": "200"}
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARK in p.name)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    torch.save(net.state_dict(), d / "m.pt")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, d / "m.safetensors")
    save_file({"enc.weight": torch.randn(4, 7)}, d / "other.safetensors")
    return d / "m.pt"


@pytest.fixture()
def work(ckpt, tmp_path) -> Path:
    """A fresh folder with a copy of the checkpoint (tests may try to destroy it)."""
    (tmp_path / "m.pt").write_bytes(ckpt.read_bytes())
    return tmp_path


# -- atomic writes -----------------------------------------------------------------------------------
def test_atomic_write_without_overwrite_refuses_an_existing_file(tmp_path):
    out = tmp_path / "out.txt"
    atomic_write(out, lambda t: Path(t).write_text("first"), overwrite=False)
    with pytest.raises(RefusedOverwriteError, match="already exists"):
        atomic_write(out, lambda t: Path(t).write_text("second"), overwrite=False)
    assert out.read_text() == "first"
    atomic_write(out, lambda t: Path(t).write_text("third"))  # the default replaces, as before
    assert out.read_text() == "third" and partials(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # normal permissions, not mkstemp's


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "out.txt"

    def full_disk(tmp):
        Path(tmp).write_text("half of it")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    for overwrite in (True, False):
        with pytest.raises(OSError, match="No space left"):
            atomic_write(out, full_disk, overwrite=overwrite)
        assert list(tmp_path.iterdir()) == []


def test_racing_writers_without_overwrite_exactly_one_wins(tmp_path):
    """Both threads are past the early existence check before either publishes."""
    out = tmp_path / "out.txt"
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def writer(name):
        def write(tmp):
            Path(tmp).write_text(name)
            barrier.wait(timeout=30)
        try:
            atomic_write(out, write, overwrite=False)
            results[name] = "won"
        except RefusedOverwriteError:
            results[name] = "refused"

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["refused", "won"]
    winner = next(n for n, r in results.items() if r == "won")
    assert out.read_text() == winner and partials(tmp_path) == []


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from graphnn.atomic import atomic_write
    from graphnn.errors import RefusedOverwriteError
    out, go, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    def write(tmp):
        Path(tmp).write_text(name)
        Path(str(go) + "." + name).touch()          # I am writing
        while not go.exists():                      # wait until both are writing
            time.sleep(0.01)
    try:
        atomic_write(out, write, overwrite=False)
    except RefusedOverwriteError:
        sys.exit(3)
""")


def test_two_processes_racing_for_one_output_exactly_one_wins(tmp_path):
    out, go = tmp_path / "out" / "result.txt", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(go), n], env=ENV, cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for n in ("a", "b")]
    deadline = time.time() + 120
    while not all(Path(f"{go}.{n}").exists() for n in ("a", "b")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.05)
    go.touch()
    codes = sorted(p.wait(60) for p in procs)
    assert codes == [0, 3], [p.stderr.read() for p in procs]
    assert out.read_text() in ("a", "b") and partials(out.parent) == []


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from graphnn.atomic import atomic_write
    def write(tmp):
        Path(tmp).write_bytes(b"x" * 100000)
        print("writing", flush=True)
        time.sleep(600)
    atomic_write(sys.argv[1], write, overwrite=False)
""")


def test_kill_9_leaves_a_partial_that_the_next_write_removes(tmp_path):
    out = tmp_path / "result.bin"
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(out)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait(30)
    left = partials(tmp_path)
    assert len(left) == 1 and left[0].startswith(".result.bin" + PARTIAL_MARK + str(p.pid) + ".")
    assert not out.exists()
    mine = tmp_path / f".result.bin{PARTIAL_MARK}{os.getpid()}.0a0a.tmp"  # a live writer's partial stays
    mine.write_text("in progress")
    atomic_write(out, lambda t: Path(t).write_text("done"), overwrite=False)
    assert out.read_text() == "done" and partials(tmp_path) == [mine.name]
    assert remove_stale_partials(out) == []


def test_atomic_folder(tmp_path):
    out = tmp_path / "model-rewired"

    def fill(text):
        def write(d):
            assert Path(d).is_dir() and not list(Path(d).iterdir())
            (Path(d) / "a.txt").write_text(text)
            (Path(d) / "sub").mkdir()
            (Path(d) / "sub" / "b.txt").write_text(text)
        return write

    atomic_folder(out, fill("one"))
    assert (out / "sub" / "b.txt").read_text() == "one"
    with pytest.raises(RefusedOverwriteError):
        atomic_folder(out, fill("two"))
    assert (out / "a.txt").read_text() == "one"
    atomic_folder(out, fill("three"), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "sub"] and (out / "a.txt").read_text() == "three"

    def broken(d):
        (Path(d) / "a.txt").write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_folder(tmp_path / "never", broken)
    with pytest.raises(OSError):
        atomic_folder(out, broken, overwrite=True)
    assert not (tmp_path / "never").exists() and (out / "a.txt").read_text() == "three"
    assert partials(tmp_path) == []
    (tmp_path / "empty").mkdir()  # even an empty folder is an existing output
    with pytest.raises(RefusedOverwriteError):
        atomic_folder(tmp_path / "empty", fill("x"))


def test_racing_folder_writers_exactly_one_wins(tmp_path):
    out = tmp_path / "out"
    barrier = threading.Barrier(2)
    results = []

    def writer(name):
        def write(d):
            (Path(d) / "who").write_text(name)
            barrier.wait(timeout=30)
        try:
            atomic_folder(out, write)
            results.append("won")
        except RefusedOverwriteError:
            results.append("refused")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["refused", "won"] and (out / "who").read_text() in ("a", "b")
    assert partials(tmp_path) == []


# -- no command writes over its input ---------------------------------------------------------------
def test_no_command_overwrites_its_input(work):
    src = work / "m.pt"
    before = src.read_bytes()
    os.symlink(src, work / "link.csv")
    os.symlink(src, work / "link.html")
    os.link(src, work / "hard.json")
    attempts = [
        ("analyse", src, "--format", "csv", "-o", src),          # the data loss
        ("analyse", src, "--format", "csv", "-o", src, "--overwrite"),
        ("describe", src, "-o", src),
        ("describe", src, "-o", src, "--overwrite"),
        ("analyse", src, "-o", work / "link.csv", "--overwrite"),  # symlink to the input
        ("describe", src, "-o", work / "hard.json", "--overwrite"),  # hard link to the input
        ("report", src, "-o", work / "link.html", "--overwrite"),
        ("compare", src, src, "-o", work / "link.csv", "--overwrite"),
        ("rewire", src, "-o", src),
        ("rewire", src, "-o", work / "hard.json"),
    ]
    for args in attempts:
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "input" in r.output or "checkpoint name" in r.output or "keeps its format" in r.output, (args, r.output)
        assert src.read_bytes() == before, args


def test_an_output_inside_an_input_folder_is_refused(ckpt, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((ckpt.parent / "m.safetensors").read_bytes())
    before = (folder / "model.safetensors").read_bytes()
    (folder / "notes.json").write_text("{}")
    (folder / "stats.csv").write_text("keep")
    for args in [("describe", folder, "--format", "json", "-o", folder / "notes.json", "--overwrite"),
                 ("analyse", folder, "-o", folder / "stats.csv", "--overwrite"),
                 ("rewire", folder, "-o", tmp_path, "--overwrite")]:  # an output folder holding the input
        r = invoke(*args)
        assert r.exit_code == 2 and "input" in r.output, (args, r.output)
    assert (folder / "model.safetensors").read_bytes() == before and (folder / "notes.json").read_text() == "{}"
    assert (folder / "stats.csv").read_text() == "keep"


# -- one policy for existing outputs ---------------------------------------------------------------------
def test_every_command_refuses_an_existing_output_unless_overwrite(ckpt, tmp_path):
    st = ckpt.parent / "m.safetensors"
    taken = {name: tmp_path / name for name in ("d.csv", "a.json", "r.html", "c.csv", "c.html", "w.pt")}
    for p in taken.values():
        p.write_text("keep me")
    (tmp_path / "w2.pt.provenance.json").write_text("keep me")
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    (demo_dir / "report.html").write_text("keep me")
    refused = [
        ("describe", ckpt, "-o", taken["d.csv"]),
        ("analyse", ckpt, "-o", taken["a.json"]),
        ("report", ckpt, "-o", taken["r.html"]),
        ("compare", ckpt, st, "-o", taken["c.csv"]),
        ("compare", ckpt, st, "--report", taken["c.html"]),
        ("rewire", ckpt, "-o", taken["w.pt"]),
        ("rewire", ckpt, "-o", tmp_path / "w2.pt", "--seed", "1"),  # only its provenance file exists
        ("demo", "--out-dir", demo_dir, "--epochs", "1"),
    ]
    for args in refused:
        r = invoke(*args)
        assert r.exit_code == 2 and "already exists" in r.output and "--overwrite" in r.output, (args, r.output)
    for p in [*taken.values(), tmp_path / "w2.pt.provenance.json", demo_dir / "report.html"]:
        assert p.read_text() == "keep me", p
    # with --overwrite the same commands replace them
    ok = [("describe", ckpt, "-o", taken["d.csv"], "--overwrite"),
          ("analyse", ckpt, "-o", taken["a.json"], "--overwrite", "--device", "cpu"),
          ("rewire", ckpt, "-o", taken["w.pt"], "--overwrite", "--seed", "0")]
    for args in ok:
        r = invoke(*args)
        assert r.exit_code == 0, (args, r.output)
    assert "name,shape" in taken["d.csv"].read_text()
    assert json.loads(taken["a.json"].read_text())["command"] == "analyse"
    assert set(torch.load(taken["w.pt"], weights_only=True)) == set(torch.load(ckpt, weights_only=True))
    assert partials(tmp_path) == []


def test_every_command_documents_the_overwrite_policy():
    for cmd in ("describe", "analyse", "report", "compare", "rewire", "demo"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "--overwrite" in r.output and "never an input" in r.output, cmd


def test_two_outputs_of_one_command_must_differ(ckpt, tmp_path):
    r = invoke("compare", ckpt, ckpt.parent / "m.safetensors", "-o", tmp_path / "x.html", "--report", tmp_path / "x.html")
    assert r.exit_code == 2 and "own path" in r.output and not (tmp_path / "x.html").exists()


# -- usage errors: exit 2, and the advice works -----------------------------------------------------------
def test_a_wrong_rewire_suffix_is_a_usage_error_and_the_suggestion_works(work):
    src = work / "m.pt"
    for bad in ("out.txt", "m.rewired.safetensors"):
        r = invoke("rewire", src, "-o", work / bad)
        assert r.exit_code == 2 and "keeps its format" in r.output, r.output
        suggested = r.output.split("(e.g. ")[1].split(")")[0]
        assert suggested.endswith("m.rewired.pt")
    same = invoke("rewire", src, "-o", src)
    assert same.exit_code == 2
    suggestion = same.output.split("(e.g. ")[1].split(")")[0]
    r = invoke("rewire", src, "-o", suggestion, "--seed", "0")
    assert r.exit_code == 0, r.output
    assert Path(suggestion).exists() and Path(suggestion + ".provenance.json").exists()


def test_wrong_table_suffixes_are_usage_errors_with_working_advice(work):
    src = work / "m.pt"
    r = invoke("describe", src, "--format", "csv", "-o", work / "d.json")
    assert r.exit_code == 2 and "--format csv" in r.output
    r = invoke("analyse", src, "-o", work / "m.safetensors")
    assert r.exit_code == 2 and "checkpoint name" in r.output
    example = r.output.split("e.g. ")[1].split()[0]
    assert example == "m.txt"
    r = invoke("analyse", src, "-o", work / example, "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = invoke("report", src, "-o", work / "r.pdf")
    assert r.exit_code == 2 and "r.html" in r.output


@pytest.mark.parametrize("gamma", ["inf", "nan", "-inf", "-1"])
def test_non_finite_or_negative_gamma_is_a_usage_error(work, gamma):
    r = invoke("rewire", work / "m.pt", "-o", work / "out.pt", "--method", "hcore", "--gamma", gamma)
    assert r.exit_code == 2 and "--gamma" in r.output, r.output
    assert not (work / "out.pt").exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "meta"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:0"]))
def test_bad_devices_are_usage_errors(ckpt, device):
    r = invoke("analyse", ckpt, "--device", device)
    assert r.exit_code == 2 and "--device" in r.output, r.output


def test_compare_of_unrelated_models_is_a_usage_error(ckpt):
    r = invoke("compare", ckpt, ckpt.parent / "other.safetensors")
    assert r.exit_code == 2, r.output
    assert "share no layer name besides 'input'" in r.output and "different models" in r.output
    assert r.stdout == ""  # no table of NaN rows


def test_a_library_usage_error_inside_a_command_exits_2(ckpt, monkeypatch):
    import graphnn.report.pipeline as pipeline

    def bad(*a, **k):
        raise graphnn.InvalidParameterError("normalise must be one of 'l2' or 'max', not 'x'")

    monkeypatch.setattr(pipeline, "analyse_file", bad)
    r = invoke("analyse", ckpt)
    assert r.exit_code == 2 and "normalise must be one of" in r.output and "unexpected" not in r.output


# -- full disk, read-only folder: exit 1, clear message, no partial output ---------------------------------
@pytest.mark.parametrize("err, fragment", [(errno.ENOSPC, "no space left on the device"),
                                           (errno.EROFS, "read-only file system"),
                                           (errno.EACCES, "permission denied")])
def test_a_failing_disk_exits_1_with_advice_and_no_partial_output(ckpt, tmp_path, monkeypatch, err, fragment):
    real = pathlib.Path.write_text

    def failing(self, data, *a, **k):
        if PARTIAL_MARK in self.name:
            real(self, data[: len(data) // 2], *a, **k)  # half the data reached the disk
            raise OSError(err, os.strerror(err), str(self))
        return real(self, data, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", failing)
    out = tmp_path / "layers.csv"
    for args in [("analyse", ckpt, "-o", out, "--device", "cpu"), ("describe", ckpt, "-o", out),
                 ("report", ckpt, "-o", tmp_path / "r.html", "--device", "cpu")]:
        r = invoke(*args)
        assert r.exit_code == 1, (args, r.output)
        assert fragment in r.output and "unexpected" not in r.output and "Traceback" not in r.output, r.output
        assert list(tmp_path.iterdir()) == [], args


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_exits_1(ckpt, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = invoke("describe", ckpt, "-o", ro / "d.csv")
        assert r.exit_code == 1 and "permission denied" in r.output and list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# -- a closed stdout, Ctrl-C, SIGTERM (real processes) ---------------------------------------------------------
def test_a_closed_stdout_ends_quietly(ckpt):
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # the reader is gone before the first byte (as `| head -c1` after one byte)
    try:
        p = subprocess.run([sys.executable, "-m", "graphnn", "analyse", str(ckpt), "--device", "cpu", "-q"],
                           stdout=w_fd, stderr=subprocess.PIPE, text=True, env=ENV, timeout=300)
    finally:
        os.close(w_fd)
    assert p.returncode == 141, p.stderr
    for noise in ("Traceback", "unexpected", "error", "Exception ignored"):  # -q: nothing of the kind
        assert noise not in p.stderr, p.stderr


START_UP = textwrap.dedent("""
    import runpy, sys, time
    class SayWhenTorchImports:  # a marker while graphnn's start-up imports run, then a pause
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                sys.meta_path.remove(self)
                print("importing torch", file=sys.stderr, flush=True)
                time.sleep(60)
            return None
    sys.meta_path.insert(0, SayWhenTorchImports())
    sys.argv = ["graphnn", *sys.argv[1:]]
    runpy.run_module("graphnn", run_name="__main__", alter_sys=True)
""")


def test_ctrl_c_during_start_up_prints_one_line_and_exits_130(ckpt):
    p = subprocess.Popen([sys.executable, "-c", START_UP, "describe", str(ckpt)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    line = p.stderr.readline()
    while line and line != "importing torch\n":  # skip any warning printed before
        line = p.stderr.readline()
    assert line == "importing torch\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err == "graphnn: interrupted\n" and out == ""


SLOW_WRITE = textwrap.dedent("""
    import pathlib, sys, time
    real = pathlib.Path.write_text
    def slow(self, data, *a, **k):
        real(self, data[:10], *a, **k)
        if ".graphnn-partial." in self.name:
            print("writing", file=sys.stderr, flush=True)
            time.sleep(600)
        return real(self, data, *a, **k)
    pathlib.Path.write_text = slow
    from graphnn.cli import main
    main(sys.argv[1:])
""")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_write_exits_cleanly_and_leaves_no_partial(ckpt, tmp_path, sig, code):
    out = tmp_path / "layers.csv"
    p = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, "describe", str(ckpt), "-o", str(out), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    line = p.stderr.readline()
    while line and line != "writing\n":  # skip any warning printed before
        line = p.stderr.readline()
    assert line == "writing\n"
    assert len(partials(tmp_path)) == 1  # the temporary file is there while writing
    p.send_signal(sig)
    out_text, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert err == "graphnn: interrupted\n" and out_text == ""  # one line, no traceback
    assert list(tmp_path.iterdir()) == []


def test_two_concurrent_commands_to_one_output_exactly_one_succeeds(ckpt, tmp_path):
    """Whether or not both pass the early existence check, the exclusive publish lets one win."""
    out = tmp_path / "d.json"
    procs = [subprocess.Popen([sys.executable, "-m", "graphnn", "describe", str(ckpt), "-o", str(out), "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "already exists" in loser and "Traceback" not in loser
    assert json.loads(out.read_text())["command"] == "describe" and partials(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_device_or_fifo_is_never_replaced(ckpt, tmp_path):
    """``-o /dev/null --overwrite`` as root must not swap /dev/null for a file (tested on a FIFO)."""
    import stat

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.csv"
    os.symlink(fifo, link)
    for target in (fifo, link):
        with pytest.raises(graphnn.InvalidParameterError, match="not a regular file"):
            atomic_write(target, lambda t: Path(t).write_text("x"), overwrite=True)
    r = invoke("describe", ckpt, "--format", "csv", "-o", link, "--overwrite")
    assert r.exit_code == 2 and "not a regular file" in r.output, r.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.path.islink(link) and partials(tmp_path) == []
