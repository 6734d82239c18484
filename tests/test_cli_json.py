"""``analyse``'s JSON against its documentation (docs/json.md, read here: every key the command
writes must be listed there, with the type it says), its notes and partitions against the
library's graph, its roles and spectral columns against the model's own weights; the CSV's role
columns; ``--no-spectral``; ``--layers`` as an alias of ``--include`` on every command."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer

import graphnn
from graphnn.cli import app

T = pytest.importorskip("transformers")

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
METRICS = ("in_strength", "out_strength", "strength", "abs_strength", "centrality", "core")
STATS = ("mean", "var", "std", "cv", "max")
#: --weightwatcher where the package is installed (its prints must stay off stdout: the JSON still parses)
WW = ("--weightwatcher",) if importlib.util.find_spec("weightwatcher") else ()
OPTIONAL = {"null", "null_seed_entropy", "base", "delta", "layers", "neurons", "blocks"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "graphnn", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def run_many(*calls):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda a: run(*a), calls))


def documented() -> dict[str, dict[str, str]]:
    """``{section title: {key: type}}`` from the tables of docs/json.md."""
    sections: dict[str, dict[str, str]] = {}
    title = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            title = line[4:].strip()
            sections[title] = {}
        m = re.match(r"^\| `([^`]+)` \| ([^|]+) \|", line)
        if m and title:
            sections[title][m.group(1)] = m.group(2).strip()
    return sections


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def check_type(value, spec: str, where: str) -> None:
    if spec == "any":
        return
    allowed = [t.strip() for t in spec.split(" or ")]
    if value is None:
        assert "null" in allowed, f"{where}: null but documented as {spec}"
        return
    kinds = tuple(k for t in allowed if t != "null" for k in (_TYPES[t] if isinstance(_TYPES[t], tuple) else (_TYPES[t],)))
    assert isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds), \
        f"{where}: {value!r} is not {spec}"


def check_rows(rows: list[dict], spec: dict[str, str], where: str, required: set[str] | None = None) -> None:
    assert rows, where
    for key in rows[0]:
        assert key in spec, f"{where}: key {key!r} is written but not documented in docs/json.md"
    for row in rows:
        assert set(row) == set(rows[0]), where
        for key, value in row.items():
            check_type(value, spec[key], f"{where}.{key}")
    if required:
        assert required <= set(rows[0]), f"{where}: missing {required - set(rows[0])}"


def expand_layer_spec(spec: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in spec.items() if not k.startswith("M_")}
    for m in METRICS:
        for s in STATS:
            out[f"{m}_{s}"] = spec[f"M_{s}"]
    return out


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=48, n_positions=16))
    folder = tmp_path_factory.mktemp("gpt2") / "model"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def outputs(gpt2, tmp_path_factory):
    _, folder = gpt2
    csv = tmp_path_factory.mktemp("out") / "blocks.csv"
    js, nospec, described = run_many(("analyse", folder, "--format", "json", "--device", "cpu"),
                                     ("analyse", folder, "--format", "json", "--table", "blocks", "--no-spectral",
                                      "--layers", "transformer.h.0.*", *WW),
                                     ("describe", folder, "--format", "json", "--layers", "transformer.h.0.*"))
    csv_run = run("analyse", folder, "--table", "blocks", "-o", csv)
    for r in (js, nospec, described, csv_run):
        assert r.returncode == 0, r.stderr
    return {"json": json.loads(js.stdout), "nospec": json.loads(nospec.stdout), "describe": json.loads(described.stdout),
            "csv": pd.read_csv(csv)}


def test_the_page_documents_every_section():
    docs = documented()
    for title in ("analyse: top-level keys", "analyse: options", "analyse: partitions items",
                  "analyse: centrality_info", "analyse: layers rows", "analyse: neurons rows", "analyse: blocks rows",
                  "describe: top-level keys"):
        assert docs.get(title), f"docs/json.md has no table under '### {title}'"


def test_analyse_json_matches_the_documented_keys_and_types(outputs):
    docs, doc = documented(), outputs["json"]
    top = docs["analyse: top-level keys"]
    for key, value in doc.items():
        assert key in top, f"top-level key {key!r} is written but not documented in docs/json.md"
        check_type(value, top[key], key)
    assert set(top) - OPTIONAL <= set(doc), set(top) - OPTIONAL - set(doc)
    assert doc["schema_version"] == 2 and doc["command"] == "analyse"
    options = docs["analyse: options"]
    for key, value in doc["options"].items():
        spec = options.get(key) or (options["analyse.*"] if key.startswith("analyse.") else None)
        assert spec is not None, f"option {key!r} is not documented"
        check_type(value, spec, f"options.{key}")
    assert doc["options"]["analyse.spectral"] is True
    for key, value in doc["centrality_info"].items():
        assert key in docs["analyse: centrality_info"], f"centrality_info.{key} is not documented"
        check_type(value, docs["analyse: centrality_info"][key], f"centrality_info.{key}")
    check_rows(doc["partitions"], docs["analyse: partitions items"], "partitions",
               set(docs["analyse: partitions items"]))
    layer_spec = expand_layer_spec(docs["analyse: layers rows"])
    check_rows(doc["layers"], layer_spec, "layers", set(layer_spec))
    check_rows(doc["neurons"], docs["analyse: neurons rows"], "neurons", set(docs["analyse: neurons rows"]))
    block_spec = docs["analyse: blocks rows"]
    check_rows(doc["blocks"], block_spec, "blocks", set(block_spec) - {"ww_alpha"})


def test_notes_and_partitions_are_the_graphs(gpt2, outputs):
    _, folder = gpt2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = graphnn.extract(folder)
    doc = outputs["json"]
    assert doc["notes"] == list(g.notes) and doc["notes"]
    assert doc["topology"] == g.topology
    assert [(p["layer"], p["size"], p["kind"], p["members"]) for p in doc["partitions"]] == \
        [(p.name, p.size, p.kind, list(p.members)) for p in g.partitions.values()]
    stream = next(p for p in doc["partitions"] if p["kind"] == "residual")
    assert "transformer.h.1.mlp.c_proj" in stream["members"]  # every writer of the stream is listed
    assert doc["num_nodes"] == g.num_nodes and doc["num_edges"] == g.num_edges


def test_roles_and_spectral_columns_in_the_json(gpt2, outputs):
    model, _ = gpt2
    blocks = {b["block"]: b for b in outputs["json"]["blocks"]}
    d = model.config.n_embd
    for i, layer in enumerate(model.transformer.h):
        w = layer.attn.c_attn.weight.detach().double()  # HF Conv1D: (in, 3 * out); the graph's matrix is W.T
        for k, part in enumerate("qkv"):
            row = blocks[f"transformer.h.{i}.attn.c_attn.weight[{part}]"]
            assert (row["layer_index"], row["role"]) == (i, part)
            m = w[:, k * d:(k + 1) * d].T
            assert row["spectral_norm"] == pytest.approx(float(torch.linalg.matrix_norm(m, ord=2)), rel=1e-9)
            assert row["frobenius_norm"] == pytest.approx(float(m.norm()), rel=1e-9)
        row = blocks[f"transformer.h.{i}.mlp.c_proj.weight"]
        assert (row["layer_index"], row["role"]) == (i, "down")
    layers = {r["layer"]: r for r in outputs["json"]["layers"]}
    assert layers["transformer.stream"]["role"] == "stream" and layers["transformer.stream"]["layer_index"] is None
    assert layers["transformer.h.1.mlp.c_fc"]["role"] == "up" and layers["transformer.h.1.mlp.c_fc"]["layer_index"] == 1
    neurons = [n for n in outputs["json"]["neurons"] if n["layer"] == "transformer.h.0.attn.c_attn.k"]
    assert neurons and all((n["layer_index"], n["role"]) == (0, "k") for n in neurons)


def test_csv_carries_the_role_columns(outputs):
    df = outputs["csv"]
    assert list(df.columns[-2:]) == ["layer_index", "role"]
    assert {"spectral_norm", "stable_rank", "frobenius_norm"} <= set(df.columns)
    q = df[df["block"] == "transformer.h.1.attn.c_attn.weight[q]"].iloc[0]
    assert q["layer_index"] == 1 and q["role"] == "q"
    assert df.loc[df["block"] == "lm_head.weight", "layer_index"].isna().all()


def test_no_spectral_and_layers_restrict(outputs):
    doc = outputs["nospec"]
    assert set(doc) & {"layers", "neurons"} == set() and doc["blocks"]
    assert not {"spectral_norm", "stable_rank", "frobenius_norm"} & set(doc["blocks"][0])
    assert doc["options"]["analyse.spectral"] is False and doc["options"]["include"] == ["transformer.h.0.*"]
    assert {b["layer_index"] for b in doc["blocks"]} == {0}
    if WW:
        assert doc["options"]["analyse.weightwatcher"] is True and "ww_alpha" in doc["blocks"][0]
        assert "ww_alpha" in documented()["analyse: blocks rows"]


def test_layers_is_include(gpt2, outputs):
    a = outputs["describe"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = graphnn.extract(gpt2[1], include=["transformer.h.0.*"])  # what --include gives
    assert [(p["name"], p["status"]) for p in a["parameters"]] == list(zip(g.coverage["name"], g.coverage["status"]))
    assert [b["block"] for b in a["blocks"]] == list(g.blocks)
    mapped = [p["name"] for p in a["parameters"] if p["status"] == "mapped"]
    assert mapped and all(n.startswith("transformer.h.0.") for n in mapped)
    assert a["schema_version"] == 2


def test_every_command_with_include_takes_layers():
    group = typer.main.get_command(app)
    with_include = []
    for name, command in group.commands.items():
        for param in command.params:
            if "--include" in param.opts:
                with_include.append(name)
                assert "--layers" in param.opts, f"{name}: --include without its --layers alias"
    assert {"describe", "analyse", "report", "compare", "rewire"} <= set(with_include)
