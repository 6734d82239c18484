"""Tables shared by the paired seed studies: per-arm summaries and paired tests against a
reference arm, computed from a per-run DataFrame (one row per configuration x seed x arm)."""

from __future__ import annotations

import pandas as pd

from . import stats


def arm_summary(runs: pd.DataFrame, keys: list[str], metrics: dict[str, str], scale: float = 100,
                digits: int = 2) -> pd.DataFrame:
    """One row per ``keys + ['arm']``: n, and for every ``metrics`` column (label = value) the
    mean ± std and the 95% CI of the mean, multiplied by ``scale`` (accuracy fractions -> %)."""
    rows = []
    for key, g in runs.groupby(keys + ["arm"], sort=False):
        row = dict(zip(keys + ["arm"], key))
        row["n"] = len(g)
        for col, label in metrics.items():
            s = stats.describe(g[col])
            row[f"{label} (mean ± std)"] = stats.fmt_pm(s["mean"], s["std"], digits, scale)
            row[f"{label} 95% CI"] = stats.fmt_ci(s["ci_low"], s["ci_high"], digits, scale)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_tests(runs: pd.DataFrame, keys: list[str], pairs: list[tuple[str, str]],
                 metrics: dict[str, str]) -> pd.DataFrame:
    """For every configuration (``keys``), every ``(reference, arm)`` pair and every metric:
    :func:`stats.paired` of ``arm − reference`` over the seeds; Holm over the whole table (paired
    t-test p-values); ``verdict`` from the Holm-adjusted p and the interval's sign."""
    rows = []
    for key, g in runs.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            wide = g.pivot(index="seed", columns="arm", values=metric)
            for ref, arm in pairs:
                r = stats.paired(wide[ref].to_numpy(), wide[arm].to_numpy())
                rows.append({**dict(zip(keys, key)), "comparison": f"{arm} − {ref}", "metric": metric, **r})
    df = pd.DataFrame(rows)
    df["p_holm"] = stats.holm(df["p_ttest"])
    df["verdict"] = [stats.verdict(p, lo, hi) for p, lo, hi in
                     zip(df["p_holm"], df["diff_ci_low"], df["diff_ci_high"])]
    return df


def paired_display(tests: pd.DataFrame, keys: list[str], metrics: dict[str, str], scale: float = 100,
                   digits: int = 2, unit: str = "points") -> pd.DataFrame:
    """Formatted view of :func:`paired_tests` (differences multiplied by ``scale``)."""
    out = tests[keys + ["comparison"]].copy()
    out["metric"] = tests["metric"].map(metrics)
    out["n"] = tests["n"]
    out[f"diff ({unit})"] = [stats.fmt_pm(a, b, digits, scale) for a, b in zip(tests["diff_mean"], tests["diff_std"])]
    out["diff 95% CI"] = [stats.fmt_ci(a, b, digits, scale) for a, b in zip(tests["diff_ci_low"], tests["diff_ci_high"])]
    out["p (t)"] = tests["p_ttest"].map(stats.fmt_p)
    out["p (Wilcoxon)"] = tests["p_wilcoxon"].map(stats.fmt_p)
    out["p (Holm)"] = tests["p_holm"].map(stats.fmt_p)
    out["d_z"] = tests["cohen_dz"].map(lambda v: f"{v:.2f}")
    out["wins"] = tests["frac_b_better"].map(lambda v: f"{v:.0%}")
    out["verdict"] = tests["verdict"]
    return out.reset_index(drop=True)


def verdict_counts(tests: pd.DataFrame, comparison: str, metric: str) -> str:
    """'k of n higher, j lower, m within noise' for one comparison and metric, with the range
    of mean differences (in points)."""
    t = tests[(tests["comparison"] == comparison) & (tests["metric"] == metric)]
    c = t["verdict"].value_counts()
    return (f"{c.get('higher', 0)} of {len(t)} configurations significantly higher, "
            f"{c.get('lower', 0)} significantly lower, {c.get('within noise', 0)} within noise; "
            f"mean differences from {100 * t['diff_mean'].min():+.2f} to {100 * t['diff_mean'].max():+.2f} points")
