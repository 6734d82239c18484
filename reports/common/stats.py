"""Statistics for paired seed studies.

* ``describe``: n, mean, sample std (ddof = 1), and the two-sided 95% confidence interval of
  the mean from Student's t (``mean ± t_{0.975, n-1} · std / √n``).
* ``paired``: for two arms measured on the same seeds, the mean difference ``b − a`` with its
  95% t interval, the paired t-test p-value, the Wilcoxon signed-rank p-value (two-sided, zero
  differences dropped: ``zero_method="wilcox"``), Cohen's ``d_z = mean(diff) / std(diff)`` and the
  fraction of seeds where ``b > a``.
* ``holm``: Holm–Bonferroni adjusted p-values for a family of tests.
* ``corrected_resampled_ttest``: Nadeau & Bengio's (2003) corrected resampled t-test for the
  difference of two classifiers scored on the same repeated cross-validation folds (the plain
  paired t-test over folds is anti-conservative because training sets overlap).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps


def describe(values) -> dict:
    """n, mean, std, ci_low, ci_high of the finite ``values``."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(sps.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return dict(n=n, mean=mean, std=std, ci_low=mean - half, ci_high=mean + half)


def paired(a, b) -> dict:
    """Compare arm ``b`` with arm ``a`` on the same seeds (equal-length arrays, same order)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = b[keep] - a[keep]
    out = describe(d)
    out = {"n": out["n"], "diff_mean": out["mean"], "diff_std": out["std"],
           "diff_ci_low": out["ci_low"], "diff_ci_high": out["ci_high"]}
    n = len(d)
    if n > 1 and np.any(d != 0):
        out["p_ttest"] = float(sps.ttest_rel(b[keep], a[keep]).pvalue)
        out["p_wilcoxon"] = float(sps.wilcoxon(d, zero_method="wilcox").pvalue)
        sd = d.std(ddof=1)
        out["cohen_dz"] = float(d.mean() / sd) if sd > 0 else math.copysign(math.inf, d.mean())
    else:  # identical arms: no evidence of any difference
        out.update(p_ttest=1.0 if n > 1 else math.nan, p_wilcoxon=1.0 if n > 1 else math.nan,
                   cohen_dz=0.0 if n > 1 else math.nan)
    out["frac_b_better"] = float(np.mean(d > 0)) if n else math.nan
    return out


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float)
    adj = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    m = len(order)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adj[idx] = running
    return adj


def corrected_resampled_ttest(diffs, n_train: int, n_test: int) -> dict:
    """Nadeau–Bengio test of mean(diffs) = 0 for per-fold score differences of two models on the
    same ``k`` folds (r repeats x f folds): ``t = mean / sqrt((1/k + n_test/n_train) · var)``
    with ``k − 1`` degrees of freedom, ``var`` the unbiased variance of the differences.
    Returns mean, std, the corrected 95% interval, the two-sided p-value and d_z."""
    d = np.asarray(diffs, dtype=float)
    k = len(d)
    mean = float(d.mean())
    var = float(d.var(ddof=1)) if k > 1 else math.nan
    scale = math.sqrt((1.0 / k + n_test / n_train) * var) if k > 1 else math.nan
    if k < 2 or var == 0:
        p = 1.0 if mean == 0 else 0.0
        half = 0.0
    else:
        t = mean / scale
        p = float(2 * sps.t.sf(abs(t), k - 1))
        half = float(sps.t.ppf(0.975, k - 1) * scale)
    dz = mean / math.sqrt(var) if k > 1 and var > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return dict(k=k, diff_mean=mean, diff_std=math.sqrt(var) if k > 1 else math.nan,
                diff_ci_low=mean - half, diff_ci_high=mean + half, p_corrected=p, cohen_dz=dz)


def correlation(x, y) -> dict:
    """Pearson r and Spearman rho of the finite pairs, with their two-sided p-values."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return dict(n=len(x), pearson_r=math.nan, pearson_p=math.nan,
                    spearman_rho=math.nan, spearman_p=math.nan)
    pr = sps.pearsonr(x, y)
    sr = sps.spearmanr(x, y)
    return dict(n=len(x), pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
                spearman_rho=float(sr.statistic), spearman_p=float(sr.pvalue))


def verdict(p_adjusted: float, diff_ci_low: float, diff_ci_high: float, alpha: float = 0.05) -> str:
    """Plain-language reading of one paired comparison."""
    if not math.isfinite(p_adjusted):
        return "not testable"
    if p_adjusted < alpha:
        return "higher" if diff_ci_low > 0 else ("lower" if diff_ci_high < 0 else "differs")
    return "within noise"


def fmt_pm(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std`` (both multiplied by ``scale``)."""
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def fmt_ci(low: float, high: float, digits: int = 2, scale: float = 1.0) -> str:
    """``[low, high]`` (both multiplied by ``scale``)."""
    return f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def fmt_p(p: float) -> str:
    """A p-value with 2 significant digits (``< 1e-4`` below that)."""
    if not math.isfinite(p):
        return "n/a"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def summary_table(df: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """``describe`` of ``value`` for every group of ``by`` (one row per group)."""
    rows = []
    for key, grp in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **describe(grp[value])})
    return pd.DataFrame(rows)
