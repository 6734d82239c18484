"""``graphnn.signal_propagation``: weights, mean-field theory and the empirical estimate in one table.

Columns of :attr:`SignalPropagation.layers` (one row per mapped layer, in forward order):

* from the weights (:mod:`.weights`): ``layer``, ``param``, ``kind``, ``src``, ``n_out``, ``fan_in``,
  ``sigma_w2``, ``sigma_b2``, ``mean_w``, ``var_w``, ``activation``, ``activation_source``;
* theory, this layer repeated at depth (:func:`.mean_field.mean_field` with its σ̂_w², σ̂_b² and the
  activation after it): ``q_star``, ``chi1_star``, ``c_star``, ``xi_q``, ``xi_c``, ``phase``;
* theory through the actual network (layer-wise maps from the input second moment ``q_in``):
  ``q_theory`` (the length map through the preceding layers) and ``chi1_theory`` (to the next layer,
  ``σ̂_w²(next) ∫Dz φ'(√q_theory z)²``); ``theory`` says ``"applies"`` or why not (an unknown
  activation, a residual merge, attention, several readers);
* empirical (:mod:`.empirical`, modules only): ``q_hat``, ``c_hat``, ``kurtosis``, ``next_layer``,
  ``chi1_hat``, ``chi1_hat_se`` (to the one layer that reads this layer's output; NaN with the
  readers listed in ``next_layer`` when there are several: see :attr:`SignalPropagation.pairs`).

:attr:`SignalPropagation.network` is one row: the mean-field verdict of the network's typical
hidden layer (median σ̂_w², σ̂_b² of the hidden layers where theory applies — layers whose output
another layer reads, with a known activation other than the identity — and their activation) and
the empirical ``chi1_hat_net``, the geometric mean of ``chi1_hat`` over the deeper half of the
hidden-to-hidden layer pairs (where the signal has approached its fixed point; the read-out layer
is left out), with the phase each implies.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import InvalidParameterError
from . import mean_field as mf
from .empirical import gaussian_pairs, run_empirical
from .weights import known_activation, weight_table


@dataclass
class SignalPropagation:
    """Result of :func:`signal_propagation` (columns: module docstring). ``empirical`` says
    whether the empirical part ran (it needs a module) and ``notes`` what could not be done."""

    layers: pd.DataFrame
    pairs: pd.DataFrame
    network: pd.DataFrame
    empirical: bool
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __repr__(self) -> str:
        net = self.network.iloc[0] if len(self.network) else {}
        return (f"SignalPropagation({len(self.layers)} layers, theory: {net.get('phase', 'n/a')}, "
                f"empirical: {net.get('phase_hat', 'n/a') if self.empirical else 'not run'})")

    def report_section(self):
        """``(table, figure)`` for a report: see :func:`graphnn.sigprop.report.section`."""
        from .report import section

        return section(self)


def _input_shape(model: nn.Module, table: pd.DataFrame, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"input_shape must be a tuple of sizes such as (784,) or (1, 28, 28) "
                                        f"(no batch axis), not {input_shape!r}") from None
        if not shape or min(shape) < 1:
            raise InvalidParameterError(f"input_shape must hold sizes >= 1, not {input_shape!r}")
        return shape
    first = table[table["src"] == "input"]
    if len(first) and (first["kind"] == "linear").all():
        return (int(first["fan_in"].iloc[0]),)
    raise InvalidParameterError(
        "cannot tell the input shape of this model (its first layer is not a Linear): pass "
        "input_shape=(channels, height, width) without the batch axis, or inputs=<a batch>")


def _hf_inputs(model: nn.Module, pairs: int, correlation: float, gen, variance: float, tokens: int):
    cfg = getattr(model, "config", None)
    d = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    if d is None:
        return None
    x = gaussian_pairs((tokens, int(d)), pairs, correlation, gen, variance)
    return {"inputs_embeds": x}


def signal_propagation(
    source: Any,
    *,
    inputs: Any = None,
    input_shape=None,
    batch: int = 256,
    input_correlation: float = 0.5,
    input_variance: float = 1.0,
    probes: int = 4,
    seed: int = 0,
    activation: str | Mapping[str, str] | None = None,
    empirical: bool = True,
    device: str | torch.device | None = None,
    include=None,
    exclude=None,
    trust: bool = False,
    critical_tol: float = mf.CRITICAL_TOL,
    tokens: int = 8,
) -> SignalPropagation:
    """Does this initialisation propagate signals well? Weights, mean-field theory and (for a
    module) an empirical estimate per mapped layer; columns in the module docstring.

    Parameters
    ----------
    source : an ``nn.Module``, a state_dict or a checkpoint path (theory from the weights only:
        a file holds no dataflow, so pass ``activation=`` for the theory; the empirical part needs
        a module and the notes say so).
    inputs : a batch (tensor, tuple of arguments or mapping of keyword arguments) instead of the
        Gaussian pairs; consecutive rows are the pairs of ``c_hat``.
    input_shape : the shape of one input without the batch axis, when it cannot be read from a
        first Linear layer (conv nets). A transformers model gets Gaussian ``inputs_embeds`` of
        ``tokens`` positions.
    batch : number of Gaussian inputs (``batch // 2`` pairs with correlation ``input_correlation``
        entry by entry, variance ``input_variance``: the ``q_in`` of the theory).
    probes : Rademacher probes of the Hutchinson estimate. ``seed`` seeds the inputs and probes.
    activation : a name (``"tanh"``, ``"relu"``, ``"leaky_relu(0.2)"``...) for every layer whose
        activation could not be read, or ``{layer or param: name}``.
    device : where the empirical pass runs (the model is moved there and back); default: where
        its parameters are.
    critical_tol : ``|χ₁ − 1| ≤ critical_tol`` counts as critical.

    >>> import torch, graphnn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    >>> sp = graphnn.signal_propagation(net, batch=64, probes=2)
    >>> round(float(sp.layers["sigma_w2"].iloc[0]), 2), sp.network["phase"].iloc[0]  # PyTorch default init
    (0.33, 'ordered')
    """
    from ..validation import check_number, check_seed

    batch = check_number("batch", batch, integer=True, positive=True)
    input_correlation = float(check_number("input_correlation", input_correlation, low=-1, high=1))
    seed = check_seed("seed", seed)
    input_variance = check_number("input_variance", input_variance, positive=True)
    critical_tol = check_number("critical_tol", critical_tol, positive=True)
    if not isinstance(empirical, bool):
        raise InvalidParameterError(f"empirical must be True or False, not {empirical!r}")
    table = weight_table(source, include=include, exclude=exclude, trust=trust, activation=activation)
    notes: list[str] = []
    pairs = pd.DataFrame(columns=["src_module", "dst_module", "chi1_hat", "chi1_hat_se"])
    ran = False
    q_in = float(input_variance)
    if empirical and isinstance(source, nn.Module):
        x, q_in, paired = _make_inputs(source, table, inputs, input_shape, batch, input_correlation,
                                       input_variance, seed, tokens)
        layers_e, pairs, e_notes = _run_on_device(source, x, probes, seed, paired, device)
        notes += e_notes
        table = _merge_empirical(table, layers_e, pairs)
        ran = True
    elif empirical:
        notes.append("empirical part not run: it needs the model itself (an nn.Module); a checkpoint or "
                     "state_dict gives the theory from its weights only")
    table = _theory(table, q_in, critical_tol, notes)
    net = _network(table, critical_tol, ran)
    src = type(source).__name__ if isinstance(source, (nn.Module, Mapping)) else str(source)
    return SignalPropagation(table, pairs, net, ran, notes, src)


def _make_inputs(model, table, inputs, input_shape, batch, correlation, variance, seed, tokens):
    gen = torch.Generator().manual_seed(int(seed or 0))
    pairs = max(1, batch // 2)
    if inputs is not None:
        first = inputs if isinstance(inputs, torch.Tensor) else (
            next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs[0])
        q = float(first.double().pow(2).mean()) if isinstance(first, torch.Tensor) and first.is_floating_point() \
            else math.nan
        return inputs, q, True
    if input_shape is None:
        hf = _hf_inputs(model, pairs, correlation, gen, variance, tokens)
        if hf is not None:
            return hf, variance, True
    shape = _input_shape(model, table, input_shape)
    return gaussian_pairs(shape, pairs, correlation, gen, variance), variance, True


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_to(v, device) for v in x)
    return x


def _run_on_device(model, x, probes, seed, paired, device):
    try:
        home = next(model.parameters()).device
    except StopIteration:
        home = torch.device("cpu")
    if device in (None, "auto"):
        target = home
    else:
        from ..validation import check_device

        target = torch.device(check_device(device))
    if target.type == "meta" or home.type == "meta":
        raise InvalidParameterError("the empirical estimate needs real weights: the model is on the meta device "
                                    "(pass empirical=False for the theory only)")
    moved = target != home
    if moved:
        model.to(target)
    try:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        x = _to(x, target)
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.to(dtype)
        elif isinstance(x, Mapping):
            x = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in x.items()}
        return run_empirical(model, x, probes=probes, seed=seed, paired=paired)
    finally:
        if moved:
            model.to(home)


def _module_of(param: str) -> str:
    mod = param.rsplit(".", 1)[0] if "." in param else ""
    if param.endswith("out_proj.weight"):
        return mod.rsplit(".", 1)[0] if "." in mod else ""
    return mod


def _merge_empirical(table: pd.DataFrame, layers_e: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    t["module"] = t["param"].map(_module_of)
    attention_parts = t["param"].str.endswith(("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"))
    by_mod = layers_e.set_index("module") if len(layers_e) else pd.DataFrame()
    for col in ("q_hat", "c_hat", "kurtosis"):
        t[col] = [float(by_mod.loc[m, col]) if (not a and m in by_mod.index) else math.nan
                  for m, a in zip(t["module"], attention_parts)]
    nxt, chi, se = [], [], []
    for m, a in zip(t["module"], attention_parts):
        out = pairs[pairs["src_module"] == m] if (len(pairs) and not a) else pairs.iloc[0:0]
        nxt.append(",".join(out["dst_module"]) if len(out) else "")
        chi.append(float(out["chi1_hat"].iloc[0]) if len(out) == 1 else math.nan)
        se.append(float(out["chi1_hat_se"].iloc[0]) if len(out) == 1 else math.nan)
    t["next_layer"], t["chi1_hat"], t["chi1_hat_se"] = nxt, chi, se
    return t


def _theory(t: pd.DataFrame, q_in: float, tol: float, notes: list[str]) -> pd.DataFrame:
    t = t.copy()
    n = len(t)
    cols = {c: [math.nan] * n for c in ("q_star", "chi1_star", "c_star", "xi_q", "xi_c", "q_theory", "chi1_theory")}
    phase, why = ["unknown"] * n, [""] * n
    writers: dict[str, list[int]] = {}
    readers: dict[str, list[int]] = {}
    for i, (dst, src) in enumerate(zip(t["layer"], t["src"])):
        writers.setdefault(dst, []).append(i)
        for s in src.split(","):
            readers.setdefault(s, []).append(i)
    known = [known_activation(a) for a in t["activation"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(n):
            if known[i]:
                r = mf.mean_field(t["activation"].iloc[i], float(t["sigma_w2"].iloc[i]),
                                  float(t["sigma_b2"].iloc[i]), tol=tol)
                cols["q_star"][i], cols["chi1_star"][i], cols["c_star"][i] = r.q_star, r.chi1, r.c_star
                cols["xi_q"][i], cols["xi_c"][i], phase[i] = r.xi_q, r.xi_c, r.phase
        # layer-wise propagation through the network
        for i in range(n):
            src = t["src"].iloc[i]
            dst = t["layer"].iloc[i]
            if "," in src:
                why[i] = "n/a: reads a concatenation"
                continue
            if len(writers.get(dst, [])) > 1:
                why[i] = "n/a: its output is merged with other layers' (residual addition)"
                continue
            if t["param"].iloc[i].endswith(("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")):
                why[i] = "n/a: attention projection"
                continue
            if src == "input":
                q_prev = q_in * 1.0
                cols["q_theory"][i] = float(t["sigma_w2"].iloc[i]) * q_prev + float(t["sigma_b2"].iloc[i])
            else:
                w = writers.get(src, [])
                if len(w) != 1 or not known[w[0]] or math.isnan(cols["q_theory"][w[0]]):
                    why[i] = "n/a: the layer before it is outside the theory" if len(w) == 1 else \
                        "n/a: its input is merged from several layers (residual) or unknown"
                    continue
                j = w[0]
                cols["q_theory"][i] = mf.length_map(t["activation"].iloc[j], float(t["sigma_w2"].iloc[i]),
                                                    float(t["sigma_b2"].iloc[i]), cols["q_theory"][j])
            why[i] = "applies" if known[i] else f"n/a: activation {t['activation'].iloc[i]}"
        for i in range(n):
            rd = readers.get(t["layer"].iloc[i], [])
            if len(rd) == 1 and known[i] and not math.isnan(cols["q_theory"][i]) and why[rd[0]] == "applies":
                j = rd[0]
                cols["chi1_theory"][i] = float(t["sigma_w2"].iloc[j]) * mf.derivative_moment(
                    t["activation"].iloc[i], cols["q_theory"][i])
    for w in caught:
        notes.append(str(w.message))
    for c, v in cols.items():
        t[c] = v
    t["phase"] = phase
    t["theory"] = why
    return t


def _network(t: pd.DataFrame, tol: float, ran: bool) -> pd.DataFrame:
    """The typical hidden layer's mean-field verdict and the deep-half empirical χ̂₁."""
    read = {s for src in t["src"] for s in src.split(",")}  # partitions some layer reads: not the read-out
    hidden = t[(t["theory"] == "applies") & t["activation"].map(known_activation) & (t["activation"] != "identity")
               & t["layer"].isin(read)]
    row: dict[str, Any] = {"hidden_layers": len(hidden), "activation": "", "sigma_w2": math.nan,
                           "sigma_b2": math.nan, "q_star": math.nan, "chi1": math.nan, "chi_c": math.nan,
                           "xi_q": math.nan, "xi_c": math.nan, "phase": "unknown",
                           "chi1_hat_net": math.nan, "phase_hat": "not run" if not ran else "unknown",
                           "layers_in_chi1_hat_net": 0}
    if len(hidden):
        act = hidden["activation"].mode().iloc[0]
        same = hidden[hidden["activation"] == act]
        row["activation"] = act if len(same) == len(hidden) else f"{act} (mixed activations: {len(same)} of {len(hidden)})"
        row["sigma_w2"] = float(same["sigma_w2"].median())
        row["sigma_b2"] = float(same["sigma_b2"].median())
        r = mf.mean_field(act, row["sigma_w2"], row["sigma_b2"], tol=tol)
        row.update(q_star=r.q_star, chi1=r.chi1, chi_c=r.chi_c, xi_q=r.xi_q, xi_c=r.xi_c, phase=r.phase)
    if ran:
        # hidden-to-hidden pairs only (the read-out layer has its own scale)
        inner = hidden[hidden["next_layer"].isin(set(hidden["module"]))] if "next_layer" in hidden else hidden
        vals = inner["chi1_hat"].dropna() if "chi1_hat" in inner else pd.Series(dtype=float)
        if len(vals):
            deep = vals.iloc[len(vals) // 2:]
            deep = deep[deep > 0]
            if len(deep):
                row["chi1_hat_net"] = float(np.exp(np.log(deep.to_numpy()).mean()))
                row["layers_in_chi1_hat_net"] = len(deep)
                row["phase_hat"] = mf.phase_of(row["chi1_hat_net"], tol)
    return pd.DataFrame([row])
