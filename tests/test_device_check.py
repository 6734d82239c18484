"""benchmarks/device_check.py on a machine without CUDA: the environment step passes, the GPU
parts say "skipped", and summary.json / bench.json are written under --out (the dry run of the
GPU check; on a CUDA machine the script itself is the check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check runs for minutes: run it by hand")
def test_without_cuda_the_gpu_parts_are_skipped_and_reported(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--out", str(tmp_path), "--skip-tests",
                           "--budget", "120"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert summary["ok"] and list(steps) == ["environment", "tests", "bench"]
    assert steps["environment"]["status"] == "passed" and steps["environment"]["cuda"] is False
    assert steps["environment"]["graphnn_import"].split()[0] == __import__("graphnn").__version__
    assert steps["tests"]["status"] == "skipped" and steps["bench"]["status"] == "skipped"
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench and all(v["status"] == "skipped" and v["note"] == "no CUDA device" for v in bench.values())
    assert "no CUDA device" in (tmp_path / "device_check.log").read_text()


def test_a_budget_too_small_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--out", str(tmp_path), "--budget", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--budget" in proc.stderr
