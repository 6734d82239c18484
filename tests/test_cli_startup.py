"""Start-up of the command line and of the package: ``graphnn --help`` (and ``python -m graphnn``)
imports no heavy library, help into a closed pipe exits 0 without a word, and the lazy public
names of ``graphnn`` resolve to the objects of their modules."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import graphnn

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "graphnn"  # the console script of this environment
HEAVY = {"torch", "pandas", "scipy", "numpy", "matplotlib", "transformers", "networkx", "safetensors"}
COMMANDS = {"python -m graphnn": [sys.executable, "-m", "graphnn"], "graphnn": [str(SCRIPT)]}
CASES = [("python -m graphnn", ["--help"]), ("python -m graphnn", ["--version"]),
         ("python -m graphnn", ["sigprop", "--help"]), ("python -m graphnn", ["rewire", "-h"]),
         ("graphnn", ["--help"])]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")


def _command(kind: str) -> list[str]:
    if kind == "graphnn" and not SCRIPT.exists():
        pytest.skip("the graphnn console script is not installed in this environment")
    return COMMANDS[kind]


def _imported_packages(importtime_stderr: str) -> set[str]:
    """Top-level names of every module ``python -X importtime`` reports as imported."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize("kind, args", CASES, ids=[f"{k} {' '.join(a)}" for k, a in CASES])
def test_help_imports_no_heavy_library(kind, args):
    cmd = _command(kind)
    interpreter = [sys.executable, "-X", "importtime"]
    full = interpreter + (cmd[1:] if cmd[0] == sys.executable else cmd) + args
    proc = subprocess.run(full, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("graphnn " if args == ["--version"] else "Usage: graphnn") in proc.stdout
    imported = _imported_packages(proc.stderr)
    assert "graphnn" in imported  # the parse sees the imports at all
    assert not imported & HEAVY, sorted(imported & HEAVY)


PIPE_CASES = [("python -m graphnn", ["--help"]), ("python -m graphnn", ["sigprop", "--help"]),
              ("graphnn", ["--version"])]


@pytest.mark.parametrize("kind, args", PIPE_CASES, ids=[f"{k} {' '.join(a)}" for k, a in PIPE_CASES])
def test_help_into_a_closed_pipe_exits_0_quietly(kind, args):
    """``graphnn --help | head -1``: the reader has gone before the first byte (its end of the
    pipe is closed before the command starts): exit 0, nothing on stderr."""
    cmd = _command(kind)
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        proc = subprocess.run(cmd + args, stdout=w_fd, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
                              timeout=60)
    finally:
        os.close(w_fd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_a_usage_error_into_a_closed_pipe_is_still_a_usage_error():
    r_fd, w_fd = os.pipe()
    os.close(r_fd)
    try:
        proc = subprocess.run([sys.executable, "-m", "graphnn", "describe"], stdout=w_fd, stderr=subprocess.PIPE,
                              text=True, env=_env(), cwd=ROOT, timeout=60)
    finally:
        os.close(w_fd)
    assert proc.returncode == 2 and "Missing argument" in proc.stderr


def test_import_graphnn_is_lazy_until_a_name_is_used():
    code = ("import sys, graphnn\n"
            "heavy = sorted({'torch', 'pandas', 'scipy', 'numpy'} & set(sys.modules))\n"
            "print('before', heavy)\n"
            "graphnn.InvalidParameterError, graphnn.__version__  # eager: no heavy import\n"
            "assert not {'torch', 'pandas'} & set(sys.modules)\n"
            "import torch\n"
            "g = graphnn.extract(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)))\n"
            "print(type(g).__name__)\n"
            "print('layers', len(graphnn.analyse(g).layers))\n"
            "from graphnn import strength, signal_propagation\n"
            "print('ok', 'pandas' in sys.modules)\n"
            "print(graphnn.sigprop.mean_field.mean_field('relu', 2.0).chi1)  # a subpackage on first use\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "before []"
    assert lines[1:] == ["LayeredGraph", "layers 3", "ok True", "1.0"]


def test_every_public_name_resolves_to_its_module_object():
    import importlib

    assert set(graphnn._LAZY) <= set(graphnn.__all__)
    for name in graphnn.__all__:
        value = getattr(graphnn, name)
        if name in graphnn._LAZY:
            module_name, attr = graphnn._LAZY[name]
            module = importlib.import_module(module_name, "graphnn")
            assert value is (module if attr is None else getattr(module, attr)), name
    assert set(graphnn.__all__) <= set(dir(graphnn))
    assert callable(graphnn.extract) and graphnn.rewire.__name__ == "graphnn.rewire"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        graphnn.no_such_name  # noqa: B018


def test_no_public_function_shares_its_name_with_a_submodule():
    """Importing a submodule ``graphnn.<name>`` binds the module over a lazy name that is not yet
    loaded; so a public function must not be named like a top-level submodule."""
    submodules = {m.name for m in pkgutil.iter_modules(graphnn.__path__)}
    clashes = {n for n, (_, attr) in graphnn._LAZY.items() if attr is not None and n in submodules}
    assert not clashes
