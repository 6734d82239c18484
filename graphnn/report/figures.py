"""Seaborn figures of an analysis, rendered off-screen (Agg) to PNG ``data:`` URIs.

Figures are built on :class:`matplotlib.figure.Figure` objects that pyplot never sees, so no
global figure is left open, the global backend is never touched, and nothing depends on a display
(drawing goes through the Agg canvas explicitly). Large models stay readable and
small: distributions are drawn from at most ``MAX_POINTS_PER_LAYER`` sampled neurons per layer,
and beyond ``MAX_LAYERS_DRAWN`` layers each layer is summarised by its percentiles along a layer
axis instead of one box per layer.
"""

from __future__ import annotations

import base64
import io
from typing import Mapping, Sequence

import contextlib
import warnings

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .labels import short_label, short_labels

#: Layers drawn one by one (a box / bar per layer); above this, per-layer percentile bands.
MAX_LAYERS_DRAWN = 60
#: Neurons sampled per layer for distribution plots (seeded, so reports are reproducible).
MAX_POINTS_PER_LAYER = 2000
#: Resolution of the embedded PNGs.
DPI = 96

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.titleweight": "bold",
    "figure.dpi": DPI,
}
_STYLE = "whitegrid"
_PALETTE = "deep"
_WIDE = 11.0  # inches: ~1050 px at DPI, the width of the report's content column
_KIND_COLORS = {"input": "#8c8c8c", "features": "#4c72b0", "residual": "#dd8452", "concat": "#55a868"}


# -- helpers ---------------------------------------------------------------------------------
def to_data_uri(fig: Figure) -> str:
    """PNG ``data:`` URI of a figure (the figure is drawn once and then released)."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    fig.clf()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(width: float, height: float, ncols: int = 1, sharey: bool = False):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    return fig, axes


def _height_for(n_layers: int) -> float:
    return min(1.3 + 0.24 * n_layers, 16.0)


def layer_order(layers: pd.DataFrame) -> list[str]:
    """Layer names in partition order (the order of the per-layer table)."""
    return [str(x) for x in layers["layer"]]


def sample_per_layer(neurons: pd.DataFrame, limit: int = MAX_POINTS_PER_LAYER, seed: int = 0) -> pd.DataFrame:
    """At most ``limit`` rows per layer, drawn without replacement with a fixed seed."""
    parts = []
    rng = np.random.default_rng(seed)
    for _, grp in neurons.groupby("layer", sort=False):
        if len(grp) > limit:
            grp = grp.iloc[np.sort(rng.choice(len(grp), size=limit, replace=False))]
        parts.append(grp)
    return pd.concat(parts, ignore_index=True) if parts else neurons.iloc[:0]


def _layer_colors(order: Sequence[str], kinds: Mapping[str, str]) -> dict[str, str]:
    """Colour of each (shortened) layer label by partition kind: grey for the network input,
    orange for residual streams, green for concatenations, blue otherwise."""
    return {lab: _KIND_COLORS.get(kinds.get(name, "features"), _KIND_COLORS["features"])
            for name, lab in zip(order, short_labels(order))}


def _kinds(layers: pd.DataFrame) -> dict[str, str]:
    if "kind" not in layers:
        return {}
    return dict(zip(layers["layer"].astype(str), layers["kind"].astype(str)))


def _symmetric_log_if_wide(ax, values: np.ndarray, axis: str = "x") -> bool:
    """Use a log axis when every value is positive and they span more than two decades."""
    v = values[np.isfinite(values)]
    if v.size and (v > 0).all() and v.max() / v.min() > 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        return True
    return False


def _band_plot(ax, neurons: pd.DataFrame, order: Sequence[str], column: str, color: str) -> None:
    """Per-layer median, 25-75 % and 5-95 % bands along the layer index (many layers)."""
    q = neurons.groupby("layer", sort=False)[column].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    q = q.reindex(order)
    x = np.arange(len(order))
    ax.fill_between(x, q[0.05], q[0.95], color=color, alpha=0.18, lw=0, label="5-95 %")
    ax.fill_between(x, q[0.25], q[0.75], color=color, alpha=0.40, lw=0, label="25-75 %")
    ax.plot(x, q[0.5], color=color, lw=1.2, label="median")
    ax.set_xlabel("layer (partition order)")
    _layer_ticks(ax, order)
    ax.legend(loc="best", frameon=False)


def _layer_ticks(ax, order: Sequence[str], max_ticks: int = 12) -> None:
    n = len(order)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_ticks)).round().astype(int))
    ax.set_xticks(idx)
    ax.set_xticklabels([short_label(order[i], 28) for i in idx], rotation=35, ha="right")


def _figure_legend(fig: Figure, axes) -> None:
    """One legend above all panels instead of one inside the first panel (where it hides data)."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6), frameon=False)


@contextlib.contextmanager
def _style():
    """Seaborn's style and our font sizes, restored afterwards (no global side effects).
    Deprecation notices that seaborn triggers inside matplotlib are not the user's concern and
    are silenced here only."""
    with sns.axes_style(_STYLE), matplotlib.rc_context(_RC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="seaborn")
        warnings.filterwarnings("ignore", category=FutureWarning, module="seaborn")
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="seaborn")
        yield


# -- single-analysis figures -----------------------------------------------------------------
def _per_layer_box(neurons, layers, column, xlabel, zero_line, log_if_wide=False) -> str:
    order = layer_order(layers)
    data = neurons[["layer", column]].copy()
    data["layer"] = data["layer"].astype(str)
    data = data[np.isfinite(data[column].to_numpy(dtype=float))]
    with _style():
        if len(order) > MAX_LAYERS_DRAWN:
            fig, (ax,) = _new_figure(_WIDE, 4.2)
            _band_plot(ax, data, order, column, sns.color_palette(_PALETTE)[0])
            ax.set_ylabel(xlabel)
            if zero_line:
                ax.axhline(0, color="0.3", lw=0.8, ls="--")
            return to_data_uri(fig)
        sample = sample_per_layer(data)
        labels = short_labels(order)
        sample["label"] = sample["layer"].map(dict(zip(order, labels)))
        kinds = _kinds(layers)
        sample["kind"] = sample["layer"].map(kinds).fillna("features")
        fig, (ax,) = _new_figure(_WIDE, _height_for(len(order)))
        sns.boxplot(
            data=sample, x=column, y="label", order=labels, hue="label", hue_order=labels,
            palette=_layer_colors(order, kinds), legend=False, orient="h", whis=(1, 99), showfliers=False,
            width=0.7, linewidth=0.8, ax=ax,
        )
        if zero_line:
            ax.axvline(0, color="0.3", lw=0.8, ls="--")
        if log_if_wide:
            _symmetric_log_if_wide(ax, sample[column].to_numpy(dtype=float))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
        return to_data_uri(fig)


def strength_distribution(neurons: pd.DataFrame, layers: pd.DataFrame, column: str = "strength") -> str:
    """Box per layer of the neurons' (signed, total) strength; whiskers at the 1st and 99th
    percentiles, outliers not drawn."""
    return _per_layer_box(neurons, layers, column, "strength (signed sum of weights)", zero_line=True)


def centrality_per_layer(neurons: pd.DataFrame, layers: pd.DataFrame) -> str:
    """Box per layer of the neurons' eigenvector centrality (|w| adjacency)."""
    return _per_layer_box(neurons, layers, "centrality", "eigenvector centrality", zero_line=False)


def strength_variance_per_layer(layers: pd.DataFrame, column: str = "strength_var") -> str:
    """Bar per layer of the variance of its neurons' strength (log axis when values span more
    than two decades)."""
    order = layer_order(layers)
    values = layers[column].to_numpy(dtype=float)
    with _style():
        if len(order) > MAX_LAYERS_DRAWN:
            fig, (ax,) = _new_figure(_WIDE, 4.0)
            ax.plot(np.arange(len(order)), values, marker=".", lw=1, color=sns.color_palette(_PALETTE)[1])
            _layer_ticks(ax, order)
            _symmetric_log_if_wide(ax, values, axis="y")
            ax.set_ylabel("variance of strength")
            return to_data_uri(fig)
        labels = short_labels(order)
        df = pd.DataFrame({"label": labels, "value": values})
        fig, (ax,) = _new_figure(_WIDE, _height_for(len(order)))
        sns.barplot(data=df, x="value", y="label", order=labels, hue="label", hue_order=labels,
                    palette=_layer_colors(order, _kinds(layers)), legend=False, orient="h", ax=ax, width=0.7)
        _symmetric_log_if_wide(ax, values)
        ax.set_xlabel("variance of strength (unbiased)")
        ax.set_ylabel("")
        return to_data_uri(fig)


def core_size_profile(core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k, size)``: for every distinct hypercore number k, how many neurons have core >= k
    (the size of the k-hypercore)."""
    c = np.sort(np.asarray(core, dtype=float)[np.isfinite(core)])
    k = np.unique(c)
    return k, c.size - np.searchsorted(c, k, side="left")


def hypercore_profile(neurons: pd.DataFrame) -> str:
    """Left: histogram of hypercore numbers. Right: size of the k-hypercore against k."""
    core = neurons["core"].to_numpy(dtype=float)
    core = core[np.isfinite(core)]
    with _style():
        fig, (a1, a2) = _new_figure(_WIDE, 3.8, ncols=2)
        sns.histplot(x=core, bins=min(50, max(5, int(np.sqrt(core.size)))), ax=a1,
                     color=sns.color_palette(_PALETTE)[2], edgecolor="white", linewidth=0.4)
        a1.set_xlabel("k-hypercore number (units of |w|)")
        a1.set_ylabel("neurons")
        a1.set_title("Hypercore numbers")
        k, size = core_size_profile(core)
        a2.step(k, size, where="post", color=sns.color_palette(_PALETTE)[3], lw=1.4)
        a2.set_xlabel("k")
        a2.set_ylabel("neurons in the k-hypercore")
        a2.set_title("Core size against k")
        a2.set_ylim(bottom=0)
        return to_data_uri(fig)


# -- comparison figures ----------------------------------------------------------------------
def compare_layer_metrics(long: pd.DataFrame, order: Sequence[str], metrics: Sequence[str],
                          titles: Mapping[str, str]) -> str:
    """One panel per metric: the per-layer value of each checkpoint side by side.
    ``long`` has columns ``layer, checkpoint, <metrics>``."""
    labels = list(dict.fromkeys(long["checkpoint"]))
    palette = dict(zip(labels, sns.color_palette(_PALETTE, len(labels))))
    with _style():
        if len(order) > MAX_LAYERS_DRAWN:
            fig, axes = _new_figure(_WIDE + 1.5, 4.0, ncols=len(metrics))
            pos = {name: i for i, name in enumerate(order)}
            for ax, m in zip(axes, metrics):
                for lab in labels:
                    d = long[long["checkpoint"] == lab]
                    ax.plot(d["layer"].map(pos), d[m], marker=".", lw=1, label=lab, color=palette[lab])
                _layer_ticks(ax, order, max_ticks=8)
                _symmetric_log_if_wide(ax, long[m].to_numpy(dtype=float), axis="y")
                ax.set_title(titles.get(m, m))
            _figure_legend(fig, axes)
            return to_data_uri(fig)
        d = long.copy()
        ylabels = short_labels(order, 40)
        d["label"] = d["layer"].astype(str).map(dict(zip(map(str, order), ylabels)))
        fig, axes = _new_figure(_WIDE + 1.5, _height_for(len(order)), ncols=len(metrics), sharey=True)
        for i, (ax, m) in enumerate(zip(axes, metrics)):
            sns.pointplot(data=d, x=m, y="label", hue="checkpoint", order=ylabels, hue_order=labels,
                          palette=palette, orient="h", linestyles="none", markers="o",
                          markersize=4, dodge=0.35 if len(labels) > 1 else False, ax=ax,
                          legend=(i == 0))
            _symmetric_log_if_wide(ax, d[m].to_numpy(dtype=float))
            ax.set_title(titles.get(m, m))
            ax.set_xlabel("")
            ax.set_ylabel("")
        _figure_legend(fig, axes)
        return to_data_uri(fig)


def compare_distributions(neurons: Mapping[str, pd.DataFrame]) -> str:
    """Before/after panels pooled over all neurons: strength histogram, centrality histogram
    and core size against k, one colour per checkpoint."""
    labels = list(neurons)
    palette = dict(zip(labels, sns.color_palette(_PALETTE, len(labels))))
    with _style():
        fig, axes = _new_figure(_WIDE, 3.6, ncols=3)
        for col, ax, title, xlabel in (
            ("strength", axes[0], "Strength (all neurons)", "strength (signed)"),
            ("centrality", axes[1], "Eigenvector centrality", "centrality"),
        ):
            frames = []
            for lab, df in neurons.items():
                s = sample_per_layer(df[["layer", col]], limit=MAX_POINTS_PER_LAYER)
                s = s[np.isfinite(s[col].to_numpy(dtype=float))]
                frames.append(pd.DataFrame({col: s[col].to_numpy(), "checkpoint": lab}))
            d = pd.concat(frames, ignore_index=True)
            sns.histplot(data=d, x=col, hue="checkpoint", hue_order=labels, palette=palette,
                         element="step", stat="density", common_norm=False, fill=False, bins=50, ax=ax)
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        for lab, df in neurons.items():
            k, size = core_size_profile(df["core"].to_numpy(dtype=float))
            axes[2].step(k, size, where="post", label=lab, color=palette[lab], lw=1.3)
        axes[2].set_title("Core size against k")
        axes[2].set_xlabel("k")
        axes[2].set_ylabel("neurons in the k-hypercore")
        _figure_legend(fig, axes[2:])
        return to_data_uri(fig)


def compare_tensor_variance(blocks: Mapping[str, pd.DataFrame], column: str = "J") -> str:
    """J (tensor strength variance, Scabini et al.) of every weight tensor, one marker per
    checkpoint; log axis when values span more than two decades."""
    labels = list(blocks)
    frames = [pd.DataFrame({"block": df["block"].astype(str), column: df[column].to_numpy(dtype=float),
                            "checkpoint": lab}) for lab, df in blocks.items()]
    d = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(d["block"]))
    palette = dict(zip(labels, sns.color_palette(_PALETTE, len(labels))))
    with _style():
        if len(order) > MAX_LAYERS_DRAWN:
            fig, (ax,) = _new_figure(_WIDE, 4.0)
            pos = {name: i for i, name in enumerate(order)}
            for lab in labels:
                s = d[d["checkpoint"] == lab]
                ax.plot(s["block"].map(pos), s[column], marker=".", lw=1, label=lab, color=palette[lab])
            _layer_ticks(ax, order)
            _symmetric_log_if_wide(ax, d[column].to_numpy(dtype=float), axis="y")
        else:
            blabels = short_labels(order, 48)
            d["label"] = d["block"].map(dict(zip(order, blabels)))
            fig, (ax,) = _new_figure(_WIDE, _height_for(len(order)))
            sns.pointplot(data=d, x=column, y="label", hue="checkpoint", hue_order=labels,
                          order=blabels, palette=palette, orient="h",
                          linestyles="none", markersize=4, dodge=0.35 if len(labels) > 1 else False, ax=ax)
            _symmetric_log_if_wide(ax, d[column].to_numpy(dtype=float))
            ax.set_ylabel("")
        _figure_legend(fig, [ax])
        ax.set_xlabel("J = (Var row sums + Var column sums) / 2") if len(order) <= MAX_LAYERS_DRAWN else ax.set_ylabel("J")
        return to_data_uri(fig)


# -- metrics against the transformer layer index, one line per role ------------------------------
#: Roles in reading order (attention, MLP, experts, ends), each with one colour in every figure.
ROLE_ORDER = ("embed", "q", "k", "v", "qkv", "kv", "o", "gate", "up", "gate_up", "down", "router", "expert",
              "head", "pooler", "norm", "stream", "other")


def role_palette(roles: Sequence[str]) -> tuple[list[str], dict]:
    """``roles`` in :data:`ROLE_ORDER` (unknown ones after, as first seen) and a colour per role
    that is the same in every figure of the report."""
    known = [r for r in ROLE_ORDER if r in roles]
    ordered = known + [r for r in dict.fromkeys(roles) if r not in ROLE_ORDER]
    base = sns.color_palette("tab20", 20)
    # the common roles get tab20's strong colours, the rarer ones its light ones
    by_use = ("q", "k", "v", "o", "up", "down", "gate", "gate_up", "qkv", "embed",
              "kv", "router", "expert", "head", "pooler", "norm", "stream", "other")
    colours = {r: base[2 * i if i < 10 else 2 * (i - 10) + 1] for i, r in enumerate(by_use)}
    extra = sns.color_palette("husl", max(1, len(ordered) - len(known)))
    for k, r in enumerate(r for r in ordered if r not in ROLE_ORDER):
        colours[r] = extra[k]
    return ordered, colours


def role_markers(roles: Sequence[str]) -> dict[str, str]:
    """A matplotlib marker per role, the same in every figure: the known roles (``ROLE_ORDER``)
    in their fixed order, then the others in the order given."""
    order = tuple(ROLE_ORDER) + tuple(r for r in dict.fromkeys(roles) if r not in ROLE_ORDER)
    return {r: m for r, m in zip(order, "osD^vP*Xhp<>" * (len(order) // 12 + 1)) if r in roles}


def role_lines(frame: pd.DataFrame, metrics: Sequence[str], titles: Mapping[str, str], ncols: int = 4,
               hlines: Sequence[float] = (), log: bool = True, sharey: bool | str = False) -> str:
    """One panel per metric: its value against ``layer_index``, one line (and marker) per
    ``role``; rows without a layer index are left out, rows sharing a (layer index, role) pair
    (experts) are averaged. A panel uses a log axis when ``log`` and its values are positive and
    span more than two decades; ``hlines`` are drawn as dashed reference lines. ``sharey``
    (matplotlib's: ``"row"`` shares the y axis of each row of ``ncols`` panels) compares
    panels of one quantity, e.g. one metric in several checkpoints."""
    d = frame[frame["layer_index"].notna()].copy()
    d["layer_index"] = d["layer_index"].astype(int)
    d["role"] = d["role"].fillna("other").astype(str)
    roles, palette = role_palette(list(dict.fromkeys(d["role"])))
    markers = role_markers(roles)
    metrics = [m for m in metrics if m in d.columns]
    ncols = max(1, min(ncols, len(metrics)))
    nrows = -(-len(metrics) // ncols)
    with _style():
        fig = Figure(figsize=(_WIDE, 0.6 + 2.7 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel())
        for ax, m in zip(axes, metrics):
            g = d.groupby(["role", "layer_index"], sort=False)[m].mean().reset_index()
            for role in roles:
                s = g[g["role"] == role].sort_values("layer_index")
                vals = pd.to_numeric(s[m], errors="coerce")
                if not np.isfinite(vals.to_numpy(dtype=float)).any():
                    continue
                ax.plot(s["layer_index"], vals, marker=markers[role], markersize=3.5, lw=1.3,
                        label=role, color=palette[role])
            if log:
                _symmetric_log_if_wide(ax, pd.to_numeric(d[m], errors="coerce").to_numpy(dtype=float), axis="y")
            for h in hlines:
                ax.axhline(h, color="0.35", lw=0.8, ls="--")
            ax.set_title(titles.get(m, m))
            ax.set_xlabel("layer index")
            ax.xaxis.get_major_locator().set_params(integer=True)
        for ax in axes[len(metrics):]:
            ax.set_visible(False)
        handles, labels = [], []
        for ax in axes[:len(metrics)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 8), frameon=False,
                       title="role")
        return to_data_uri(fig)


def role_bands(neurons: pd.DataFrame, column: str, ylabel: str, zero_line: bool = False) -> str:
    """The distribution of a neuron metric against ``layer_index``, one panel per ``role``
    (shared y axis): the median as a line, the 25-75 % and 5-95 % ranges as bands (neurons
    without a layer index are left out; one role's partitions in one layer are pooled)."""
    d = neurons[neurons["layer_index"].notna()][["layer_index", "role", column]].copy()
    d["layer_index"] = d["layer_index"].astype(int)
    d["role"] = d["role"].fillna("other").astype(str)
    d = d[np.isfinite(d[column].to_numpy(dtype=float))]
    roles, palette = role_palette(list(dict.fromkeys(d["role"])))
    q = d.groupby(["role", "layer_index"], sort=False)[column].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    ncols = max(1, min(4, len(roles)))
    nrows = -(-len(roles) // ncols)
    with _style():
        fig = Figure(figsize=(_WIDE, 0.5 + 2.5 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
        for ax, role in zip(axes, roles):
            s = q.loc[role].sort_index()
            x = s.index.to_numpy()
            ax.fill_between(x, s[0.05], s[0.95], color=palette[role], alpha=0.15, lw=0, label="5-95 %")
            ax.fill_between(x, s[0.25], s[0.75], color=palette[role], alpha=0.35, lw=0, label="25-75 %")
            ax.plot(x, s[0.5], marker="o", markersize=3, lw=1.4, color=palette[role], label="median")
            if zero_line:
                ax.axhline(0, color="0.3", lw=0.8, ls="--")
            ax.set_title(f"role: {role}")
            ax.set_xlabel("layer index")
            ax.xaxis.get_major_locator().set_params(integer=True)
        for k, ax in enumerate(axes):
            if k % ncols == 0 and k < len(roles):
                ax.set_ylabel(ylabel)
            if k >= len(roles):
                ax.set_visible(False)
        return to_data_uri(fig)


def null_z_heatmap(null: pd.DataFrame, z_mark: float = 3.0) -> str:
    """z-scores of a null-model frame (``layer, scope, metric, z``) as a heatmap: one row per
    layer (weight tensors, partitions, network), one column per metric, diverging colours
    centred at 0 and saturated at ``max(z_mark, min(10, max |z|))``; cells with |z| >= ``z_mark`` are
    outlined; NaN (no spread in the null) left blank."""
    d = null.copy()
    names = list(dict.fromkeys(d["layer"].astype(str)))
    lab = dict(zip(names, short_labels(names, 40)))
    d["row"] = [f"{lab[str(l)]} [{s}]" for l, s in zip(d["layer"], d["scope"])]
    rows = list(dict.fromkeys(d["row"]))
    cols = list(dict.fromkeys(d["metric"]))
    z = d.pivot_table(index="row", columns="metric", values="z", aggfunc="first", dropna=False)
    z = z.reindex(index=rows, columns=cols)
    vals = z.to_numpy(dtype=float)
    # colours saturate at |z| = 10 (or at z_mark when all are smaller) so that moderate z stay visible
    # next to a huge one; the numbers in the cells are exact
    zmax = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else z_mark
    lim = max(z_mark, min(10.0, zmax))
    with _style():
        fig, (ax,) = _new_figure(_WIDE * 0.8, min(1.2 + 0.26 * len(rows), 16.0))
        sns.heatmap(z, ax=ax, cmap="vlag", center=0, vmin=-lim, vmax=lim, annot=len(rows) <= 40, fmt=".1f",
                    annot_kws={"fontsize": 7}, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": "z = (observed - null mean) / null std", "shrink": 0.6,
                              "extend": "both" if zmax > lim else "neither"})
        for i, j in zip(*np.nonzero(np.isfinite(vals) & (np.abs(np.nan_to_num(vals)) >= z_mark))):
            ax.add_patch(matplotlib.patches.Rectangle((j, i), 1, 1, fill=False, edgecolor="black", lw=1.4))
        ax.grid(False)
        ax.set_facecolor("#f3f4f6")  # blank (undefined z) cells
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=20)
        return to_data_uri(fig)
