"""reports/edge_of_chaos: --quick runs end to end into a fresh temporary folder and leaves the
committed results alone; the committed README is what --report-only renders from the committed
CSVs, and its fitted constant is the least-squares fit recomputed here from runs.csv."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "reports" / "edge_of_chaos"


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _run(*args: str, tmpdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmpdir))
    proc = subprocess.run([sys.executable, str(STUDY / "run.py"), *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_quick_run_goes_to_a_temporary_folder(tmp_path):
    before = _snapshot(STUDY)
    proc = _run("--quick", tmpdir=tmp_path)
    printed = re.findall(r"--quick outputs go to (.+?) \(the committed", proc.stdout)
    assert len(printed) == 1
    out = Path(printed[0])
    assert out.parent == tmp_path.resolve()
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "--quick smoke run" in readme and "## Conclusion" in readme
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and runs["sigma_w2_hat"].gt(0).all()
    # PA keeps σ̂_w² exactly; the study's numbers come from graphnn.signal_propagation
    pa = pd.read_csv(out / "pa.csv").pivot(index="seed", columns="arm", values="sigma_w2_hat")
    assert np.allclose(pa["pa"], pa["plain"], rtol=1e-12)
    assert _snapshot(STUDY) == before


def test_committed_readme_is_rendered_from_the_committed_csvs(tmp_path):
    for name in ("runs.csv", "pa.csv", "meta.csv"):
        shutil.copy(STUDY / name, tmp_path / name)
    _run("--report-only", "--out", str(tmp_path), tmpdir=tmp_path)
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == (STUDY / "README.md").read_text(encoding="utf-8")
    # the fitted constant, recomputed: L_max = largest depth with mean accuracy > 20%, fit over the
    # σ_w² with 6 ξ_c inside the grid and L_max below the deepest depth
    runs = pd.read_csv(STUDY / "runs.csv")
    deepest = runs["depth"].max()
    xs, ys = [], []
    for _, g in runs.groupby("sigma_w2"):
        acc = g.groupby("depth")["test_acc"].mean()
        ok = acc[acc > 0.2]
        xi = g["xi_c"].iloc[0]
        if len(ok) and ok.index.max() < deepest and math.isfinite(xi) and 6 * xi <= deepest:
            xs.append(xi)
            ys.append(ok.index.max())
    readme = (STUDY / "README.md").read_text(encoding="utf-8")
    if xs:
        k = float(np.dot(xs, ys) / np.dot(xs, xs))
        assert f"L_max ≈ {k:.2f} ξ_c over {len(xs)} σ_w²" in readme
