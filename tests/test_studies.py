"""The studies under reports/: each run.py --quick runs end to end into the fresh temporary folder
it prints, leaves the committed results under reports/ untouched, and the numbers in its README
are the ones its CSVs give (recomputed here independently with pandas/scipy). Also the
statistics helpers against scipy and brute force."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reports.common import render, stats  # noqa: E402

STUDIES = ("pa_rewiring", "temporal_summaries", "hcore_init")


# ----------------------------------------------------------------------------- helpers
def md_tables(text: str) -> list[pd.DataFrame]:
    """Every pipe table of a markdown text, cells as stripped strings."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(-+\|)+$", lines[i + 1]):
            split = lambda line: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            header = split(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split(lines[i]))
                i += 1
            tables.append(pd.DataFrame(rows, columns=header))
        else:
            i += 1
    return tables


def table_with(tables: list[pd.DataFrame], column: str) -> pd.DataFrame:
    found = [t for t in tables if column in t.columns]
    assert found, f"no README table has a column {column!r}"
    return found[0]


def pm(values, digits: int, scale: float = 100.0) -> str:
    """mean ± sample std, as an independent oracle for the README's cells."""
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def ci(values, digits: int, scale: float = 100.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    lo, hi = sps.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sps.sem(v))
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def p2(p: float) -> str:
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def run_study(name: str, out: Path | None, *extra: str,
              env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``run.py --quick`` of a study (``--out out`` unless ``out`` is None: the default output)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env_extra or {}))
    where = [] if out is None else ["--out", str(out)]
    proc = subprocess.run([sys.executable, str(ROOT / "reports" / name / "run.py"), "--quick",
                           *where, *extra], capture_output=True, text=True, env=env, timeout=600,
                          cwd=str(ROOT))
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder`` (bytecode caches aside): size, mtime (ns) and sha256."""
    import hashlib
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module", params=STUDIES)
def study(request, tmp_path_factory):
    """The study's ``--quick`` run with the default output: a fresh temporary folder (under
    ``$TMPDIR``, pointed here at a pytest folder), printed; nothing under reports/ changes (the
    committed full results keep their bytes and mtimes, and no file appears or goes)."""
    tmp = tmp_path_factory.mktemp(f"tmpdir-{request.param}")
    committed = snapshot(ROOT / "reports")
    assert (ROOT / "reports" / request.param / "run.py").is_file()
    proc = run_study(request.param, None, env_extra={"TMPDIR": str(tmp)})
    printed = re.findall(r"--quick outputs go to (.+?) \(the committed", proc.stdout)
    assert len(printed) == 1, proc.stdout[-2000:]
    out = Path(printed[0])
    assert out.parent == tmp.resolve() and out.name.startswith(f"graphnn-{request.param}-quick-")
    assert f"report: {out / 'README.md'}" in proc.stdout
    assert snapshot(ROOT / "reports") == committed, "a --quick run changed files under reports/"
    return request.param, out


# ----------------------------------------------------------------------------- every study
@pytest.mark.slow
def test_outputs_exist_and_html_is_self_contained(study):
    name, out = study
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "--quick smoke run" in readme
    assert not (out / "run.py").exists()  # outputs went to the printed folder, not beside run.py
    for section in ("## Question", "## Protocol", "## Results", "## Conclusion"):
        assert section in readme
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert "runs.csv" in csvs and "meta.csv" in csvs
    for csv in csvs:
        assert len(pd.read_csv(out / csv)) > 0, csv
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert figures, "the README shows no figure"
    for fig in figures:
        data = (out / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", fig
    html = (out / "README.html").read_text(encoding="utf-8")
    assert html.count("<img") == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']+)'", html))
    assert not re.search(r"<(link|script)\b", html) and "http://" not in html and "https://" not in html
    # the HTML carries the same tables as the markdown
    assert html.count("<table>") == len(md_tables(readme))


@pytest.mark.slow
def test_report_only_rerenders_the_same_readme(study):
    name, out = study
    before = (out / "README.md").read_text(encoding="utf-8")
    (out / "README.md").unlink()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "reports" / name / "run.py"), "--report-only",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "README.md").read_text(encoding="utf-8") == before


# ----------------------------------------------------------------------------- output folder
def test_output_folder_policy(tmp_path, monkeypatch):
    """Full run: beside run.py; smoke run: a fresh folder under $TMPDIR, a new one each time;
    --out wins, except that a smoke run into the study folder is refused."""
    import tempfile
    from reports.common import cli
    study = ROOT / "reports" / "pa_rewiring"
    assert cli.output_folder(study, None, smoke=False) == study
    assert cli.output_folder(study, tmp_path / "x", smoke=True) == (tmp_path / "x").resolve()
    assert cli.output_folder(study, tmp_path / "x", smoke=False) == (tmp_path / "x").resolve()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first, second = (cli.output_folder(study, None, smoke=True) for _ in range(2))
    assert first != second and first.parent == second.parent == tmp_path.resolve()
    assert first.is_dir() and not any(first.iterdir())
    for spelling in (study, study / ".." / "pa_rewiring"):
        with pytest.raises(ValueError, match="committed full results"):
            cli.output_folder(study, spelling, smoke=True)
    link = tmp_path / "link"
    link.symlink_to(study, target_is_directory=True)
    with pytest.raises(ValueError, match="committed full results"):
        cli.output_folder(study, link, smoke=True)


def test_parse_args_usage_errors_exit_2(tmp_path, capsys):
    """Smoke runs never get the study folder; re-rendering --quick results needs their folder."""
    from reports.common import cli
    script = str(ROOT / "reports" / "temporal_summaries" / "run.py")
    extra = lambda p: p.add_argument("--cv-only", action="store_true")  # noqa: E731
    for argv in (["--quick", "--out", str(ROOT / "reports" / "temporal_summaries")],
                 ["--quick", "--report-only"], ["--quick", "--cv-only"]):
        with pytest.raises(SystemExit) as exc:
            cli.parse_args("t", script, argv, extra=extra)
        assert exc.value.code == 2, argv
    err = capsys.readouterr().err
    assert "committed full results" in err and "pass the folder that the --quick run printed" in err
    args = cli.parse_args("t", script, ["--quick", "--report-only", "--out", str(tmp_path)], extra=extra)
    assert args.out == tmp_path.resolve()
    args = cli.parse_args("t", script, ["--report-only"], extra=extra)
    assert args.out == ROOT / "reports" / "temporal_summaries"  # the committed results, in place
    assert capsys.readouterr().out == ""  # only a smoke run announces its folder


def test_outputs_are_replaced_whole_or_not_at_all(tmp_path):
    """A write that fails half-way leaves the previous file byte-identical and no temporary
    file behind; a write that completes replaces it, with the usual file mode."""
    from reports.common import outputs
    target = tmp_path / "runs.csv"
    target.write_text("a,b\n1,2\n")

    def half_then_fail(tmp):
        Path(tmp).write_text("a,b\n9")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        outputs.replace_atomically(target, half_then_fail)
    assert target.read_text() == "a,b\n1,2\n" and sorted(tmp_path.iterdir()) == [target]
    outputs.write_csv(pd.DataFrame({"a": [3], "b": [4.5]}), target)
    assert pd.read_csv(target).to_dict("list") == {"a": [3], "b": [4.5]}
    assert sorted(tmp_path.iterdir()) == [target]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------------------- per study
def _check_arm_table(readme_tables, runs, keys, metrics):
    """Summary rows (keys + arm) equal mean ± std and the t interval of the CSV's columns."""
    first_label = next(iter(metrics.values()))
    table = table_with(readme_tables, f"{first_label} (mean ± std)")
    assert len(table) == runs.groupby(keys + ["arm"]).ngroups
    for _, row in table.iterrows():
        sel = np.ones(len(runs), dtype=bool)
        for k in keys + ["arm"]:
            sel &= runs[k].astype(str).to_numpy() == row[k]
        g = runs[sel]
        assert int(row["n"]) == len(g) >= 2
        for col, label in metrics.items():
            assert row[f"{label} (mean ± std)"] == pm(g[col], 2), (label, row.to_dict())
            assert row[f"{label} 95% CI"] == ci(g[col], 2), (label, row.to_dict())


def _check_paired_table(readme_tables, runs, keys, metric_labels):
    table = table_with(readme_tables, "p (Wilcoxon)")
    raw_p = []
    for _, row in table.iterrows():
        sel = np.ones(len(runs), dtype=bool)
        for k in keys:
            sel &= runs[k].astype(str).to_numpy() == row[k]
        metric = {v: k for k, v in metric_labels.items()}[row["metric"]]
        arm, ref = row["comparison"].split(" − ")
        wide = runs[sel].pivot(index="seed", columns="arm", values=metric)
        d = (wide[arm] - wide[ref]).to_numpy()
        assert row["diff (points)"] == pm(d, 2)
        assert row["diff 95% CI"] == ci(d, 2)
        p = sps.ttest_rel(wide[arm], wide[ref]).pvalue if np.any(d != 0) else 1.0
        assert row["p (t)"] == p2(p)
        assert row["d_z"] == (f"{d.mean() / d.std(ddof=1):.2f}" if np.any(d != 0) else "0.00")
        raw_p.append(p)
    # Holm: brute force from the definition
    m = len(raw_p)
    order = np.argsort(raw_p)
    for i, row in enumerate(table.itertuples()):
        rank = int(np.where(order == i)[0][0])
        adj = max(min(1.0, (m - r) * raw_p[order[r]]) for r in range(rank + 1))
        assert table["p (Holm)"].iloc[i] == p2(adj)


@pytest.mark.slow
def test_readme_numbers_are_the_csv_numbers(study):
    check_readme_numbers(*study)


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_committed_readme_is_generated_from_committed_csvs(name, tmp_path):
    """The committed full-run README equals what --report-only renders from the committed CSVs,
    and its numbers pass the same independent checks."""
    folder = ROOT / "reports" / name
    if not (folder / "README.md").exists():
        pytest.skip(f"{name} has no committed full run yet")
    import shutil
    for csv in folder.glob("*.csv"):
        shutil.copy(csv, tmp_path / csv.name)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(folder / "run.py"), "--report-only", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == (folder / "README.md").read_text(encoding="utf-8")
    check_readme_numbers(name, folder)


def check_readme_numbers(name: str, out: Path) -> None:
    readme = (out / "README.md").read_text(encoding="utf-8")
    tables = md_tables(readme)
    runs = pd.read_csv(out / "runs.csv")
    if name == "pa_rewiring":
        keys = ["dataset", "model", "init"]
        assert set(runs["arm"]) == {"base", "pa", "search"}
        _check_arm_table(tables, runs, keys, {"acc_epoch1": "epoch-1 acc %", "acc_final": "final acc %"})
        _check_paired_table(tables, runs, keys, {"acc_epoch1": "epoch-1 acc", "acc_final": "final acc"})
        # PA keeps every weight's value and only moves it: the layer strength variance drops
        layers = pd.read_csv(out / "layers.csv")
        wide = layers.pivot_table(index=keys + ["seed", "layer_index"], columns="arm", values="J")
        assert (wide["pa"] / wide["base"]).median() < 0.5
        jt = table_with(tables, "J base")
        means = layers.groupby(keys + ["layer", "arm"])["J"].mean()
        for _, row in jt.iterrows():
            key = (row["dataset"], row["model"], row["init"], row["layer"])
            assert row["J base"] == f"{means[key + ('base',)]:.4g}"
            assert row["J PA"] == f"{means[key + ('pa',)]:.4g}"
    elif name == "hcore_init":
        keys = ["dataset", "model"]
        assert set(runs["arm"]) == {"base", "gamma=0", "gamma=0.5", "gamma=1", "gamma=2"}
        _check_arm_table(tables, runs, keys, {"acc_final": "final acc %", "acc_after_reinit_epoch": "epoch-2 acc %"})
        _check_paired_table(tables, runs, keys, {"acc_final": "final acc", "acc_after_reinit_epoch": "epoch-2 acc"})
        re_init = runs[runs["arm"] != "base"]
        assert np.allclose(re_init["std_ratio"], 1.0, atol=0.25)
        assert (runs.loc[runs["arm"] == "gamma=0", "rel_change_vs_gamma0"] == 0).all()
    else:
        cv = pd.read_csv(out / "cv_folds.csv")
        T = int(cv["horizon"].max())
        assert f"**{len(runs)} runs**" in readme
        median = runs["final_acc"].median()
        pos = int((runs["final_acc"] > median).sum())
        assert f"{pos} positive, {len(runs) - pos} negative" in readme
        learned = runs[runs["final_acc"] > 0.2]
        pos = int((learned["final_acc"] > learned["final_acc"].median()).sum())
        assert f"**, {len(learned)} runs)" in readme and f"{pos} positive, {len(learned) - pos} negative." in readme
        table = table_with(tables, "accuracy %")
        sub = cv[cv["horizon"] == T]
        assert len(table) == sub.groupby(["population", "scheme", "features", "classifier"]).ngroups
        assert set(sub["population"]) == {"all runs", "runs that learned (final acc > 20%)"}
        for _, row in table.iterrows():
            g = sub[(sub.population == row["population"]) & (sub.scheme == row["CV scheme"])
                    & (sub.features == row["features"]) & (sub.classifier == row["classifier"])]
            assert int(row["folds"]) == len(g)
            assert row["accuracy %"] == pm(g["accuracy"], 1)
        # every feature set and classifier is scored on the same folds
        sizes = cv.groupby(["population", "scheme", "horizon", "repeat", "fold"])["n_test"].nunique()
        assert (sizes == 1).all()
        # graph features really come from graphnn summaries of every epoch 0..horizon
        ls = pd.read_csv(out / "layer_stats.csv")
        assert set(ls["epoch"]) == set(range(0, T + 1))
        assert set(ls["measure"]) == {"degree", "eigenvector"}


# ----------------------------------------------------------------------------- statistics
def test_describe_matches_scipy_t_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=17)
    d = stats.describe(x)
    lo, hi = sps.t.interval(0.95, 16, loc=x.mean(), scale=sps.sem(x))
    assert d["n"] == 17 and math.isclose(d["mean"], x.mean()) and math.isclose(d["std"], x.std(ddof=1))
    assert math.isclose(d["ci_low"], lo) and math.isclose(d["ci_high"], hi)
    # non-finite values are dropped, not propagated
    assert stats.describe(np.append(x, [np.nan, np.inf]))["n"] == 17


def test_paired_matches_scipy_and_definition():
    rng = np.random.default_rng(1)
    a = rng.normal(size=30)
    b = a + 0.3 + rng.normal(scale=0.5, size=30)
    r = stats.paired(a, b)
    d = b - a
    assert math.isclose(r["p_ttest"], sps.ttest_rel(b, a).pvalue)
    assert math.isclose(r["p_wilcoxon"], sps.wilcoxon(b, a).pvalue)
    assert math.isclose(r["cohen_dz"], d.mean() / d.std(ddof=1))
    assert math.isclose(r["frac_b_better"], np.mean(d > 0))
    same = stats.paired(a, a)
    assert same["p_ttest"] == 1.0 and same["cohen_dz"] == 0.0
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired(a, b[:-1])


def test_holm_against_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 9))
        adj = stats.holm(p)
        order = np.argsort(p)
        m = len(p)
        for i in range(m):
            rank = int(np.where(order == i)[0][0])
            expect = max(min(1.0, (m - r) * p[order[r]]) for r in range(rank + 1))
            assert math.isclose(adj[i], expect)


def test_corrected_resampled_ttest_reduces_to_one_sample_t():
    rng = np.random.default_rng(3)
    d = rng.normal(0.02, 0.05, size=25)
    # with a vanishing test/train ratio the correction is 1/k: the ordinary one-sample t-test
    r = stats.corrected_resampled_ttest(d, n_train=1e12, n_test=1)
    assert math.isclose(r["p_corrected"], sps.ttest_1samp(d, 0).pvalue, rel_tol=1e-6)
    # the correction widens the interval and raises the p-value
    r2 = stats.corrected_resampled_ttest(d, n_train=200, n_test=50)
    assert r2["p_corrected"] > r["p_corrected"]
    assert r2["diff_ci_high"] - r2["diff_ci_low"] > r["diff_ci_high"] - r["diff_ci_low"]


def test_verdict_reads_the_interval_sign():
    assert stats.verdict(0.01, 0.1, 0.3) == "higher"
    assert stats.verdict(0.01, -0.3, -0.1) == "lower"
    assert stats.verdict(0.2, -0.1, 0.3) == "within noise"


def test_report_renders_the_same_table_in_markdown_and_html(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    df = pd.DataFrame({"arm": ["a|b", "c"], "value": [1.5, 2.25]})
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    rep = render.Report("T").heading("H").paragraph("with `code` and **bold**").table(df, "cap")
    rep.figure(tmp_path / "f.png", "a figure")
    md, page = rep.write(tmp_path)
    parsed = md_tables(md.read_text())[0]
    assert parsed["arm"].tolist() == ["a|b", "c"] and parsed["value"].tolist() == ["1.5", "2.25"]
    html = page.read_text()
    assert "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert "data:image/png;base64," in html and "<td>a|b</td>" in html


def test_temporal_features_deltas_and_diverged_runs():
    """Feature table of the temporal study on hand-made summaries: the value at epoch t and its
    change from t-1 are what the layer statistics say; a run that diverged before epoch 1 gets
    the sentinel, never NaN."""
    import runpy
    mod = runpy.run_path(str(ROOT / "reports" / "temporal_summaries" / "run.py"), run_name="study")
    runs = pd.DataFrame({"run": [0, 1], "lr": [1.0, 0.01], "dropout": [0.0, 0.5], "final_acc": [0.1, 0.8]})
    epochs = pd.DataFrame({"run": [0, 0, 1, 1], "epoch": [1, 2, 1, 2],
                           "train_loss": [np.inf, np.inf, 2.0, 1.5], "train_acc": [0.1, 0.1, 0.3, 0.5],
                           "test_loss": [np.inf, np.inf, 1.9, 1.4], "test_acc": [0.1, 0.1, 0.35, 0.55]})
    rows = []
    for run, last in ((0, 0), (1, 2)):
        for epoch in range(last + 1):
            for measure in ("degree", "eigenvector"):
                base = 10 * run + epoch + (0.5 if measure == "eigenvector" else 0.0)
                rows.append(dict(run=run, epoch=epoch, layer="fc1", measure=measure, mean=base,
                                 std=base / 10, q10=base - 1, q50=base, q90=base + 1))
    feats = mod["feature_table"](runs, epochs, pd.DataFrame(rows), 2)
    for name, df in feats.items():
        assert not df.isna().any().any(), name
    deg = feats["weighted degree"]
    assert deg.loc[1, "degree|fc1|mean|e2"] == 12 and deg.loc[1, "degree|fc1|mean|d2"] == 1
    assert deg.loc[1, "degree|fc1|q90|d1"] == 1
    assert deg.loc[0, "degree|fc1|mean|e1"] == mod["DIVERGED_SENTINEL"]
    assert feats["train loss @T"].loc[0].item() == mod["DIVERGED_SENTINEL"]
    assert feats["train loss @T"].loc[1].item() == 1.5
    assert set(feats["degree + centrality"].columns) == set(deg.columns) | set(feats["eigenvector centrality"].columns)
    y, median = mod["labels"](runs)
    assert median == 0.45 and y.tolist() == [0, 1]
