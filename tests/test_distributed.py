"""The Dask engine (graphnn.distributed) against the single-process analyses on the same files.

Weights are multiples of 1/256 with small numerators, so every float64 sum of them is exact and
the order in which the workers and the single process add them cannot change a digit: strength,
J and the hypercore numbers must be *equal*, centrality equal to solver tolerance.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import graphnn
from graphnn.errors import InvalidParameterError

distributed = pytest.importorskip("distributed")

from graphnn.distributed import close, connect, parse_address  # noqa: E402
from graphnn.distributed.placement import assign, tensor_files  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = connect("local:2", processes=False)
    yield c
    close(c)


def _llama_tensors(layers=2, hidden=32, inter=64, heads=4, kv_heads=2, vocab=64, seed=1):
    """Hugging Face Llama names and shapes, exact weights (multiples of 1/256) in bf16."""
    gen = torch.Generator().manual_seed(seed)
    kv = hidden // heads * kv_heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    tensors = {n: (torch.randint(-64, 65, s, generator=gen) / 256.0).to(torch.bfloat16) for n, s in shapes.items()}
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "vocab_size": vocab, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16"}
    return tensors, config


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A tiny Llama folder as Hugging Face writes it (grouped-query attention, so the k/v blocks
    are index-mapped), in 4 bf16 shards with model.safetensors.index.json."""
    from safetensors.torch import save_file

    tensors, config = _llama_tensors()
    folder = tmp_path_factory.mktemp("llama")
    names = list(tensors)
    shards = [names[i::4] for i in range(4)]  # interleaved: every shard holds parts of every layer
    weight_map = {}
    for k, part in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _assert_same(local, dist, centrality_atol=1e-9):
    assert list(local.neurons.columns) == list(dist.neurons.columns)
    names = ["layer_index", "role"]  # the names' transformer block and role: equal as written
    for col in local.neurons.columns:
        a, b = local.neurons[col].to_numpy(), dist.neurons[col].to_numpy()
        if col == "centrality":
            np.testing.assert_allclose(b.astype(float), a.astype(float), rtol=0, atol=centrality_atol)
        elif col in names:
            assert local.neurons[col].equals(dist.neurons[col]), col
        else:
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), col
    spectral = [c for c in ("spectral_norm", "stable_rank", "frobenius_norm") if c in local.blocks]
    assert spectral == [c for c in ("spectral_norm", "stable_rank", "frobenius_norm") if c in dist.blocks]
    assert local.blocks.drop(columns=spectral).equals(dist.blocks.drop(columns=spectral))
    np.testing.assert_allclose(dist.blocks[spectral].to_numpy(float), local.blocks[spectral].to_numpy(float),
                               rtol=1e-9)  # an SVD on another worker's threads may differ in the last bits
    for col in names:
        assert local.layers[col].equals(dist.layers[col]), col
    np.testing.assert_allclose(dist.layers.drop(columns=["layer", "kind", *names]).to_numpy(float),
                               local.layers.drop(columns=["layer", "kind", *names]).to_numpy(float), rtol=1e-9,
                               atol=1e-12)


def test_sharded_folder_equals_single_process(client, llama_folder):
    index = json.loads((llama_folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3  # really sharded
    g = graphnn.extract(llama_folder)
    assert any(b.is_mapped for b in g.blocks.values())  # GQA index maps travel too
    local = graphnn.analyse(graphnn.extract(llama_folder))
    dist = graphnn.analyse(g, client=client)
    _assert_same(local, dist)
    assert local.centrality_info["converged"] and dist.centrality_info["converged"]
    assert dist.centrality_info["eigenvalue"] == pytest.approx(local.centrality_info["eigenvalue"], rel=1e-12)
    # the weighted cores are not trivial (many levels), and equal
    assert dist.neurons["core"].nunique() > 10
    info = dist.centrality_info["dask"]
    assert info["workers"] == 2 and sum(info["blocks_per_worker"].values()) == len(g.blocks)
    # per matrix-vector product each worker gets and returns one float64 vector over its partitions:
    # O(nodes), far below the edges
    assert 0 < info["bytes_per_matvec"] <= 2 * 2 * 8 * g.num_nodes
    assert info["bytes_per_matvec"] < g.num_edges
    assert dist.options["dask"].startswith("inproc://")


def test_options_and_timings_have_the_single_process_keys(client, llama_folder):
    """The options record and the timings of a Dask analysis are those of analyse on one process
    (plus ``dask``): ``weightwatcher`` is recorded, and the workers' SVD seconds are reported as
    ``spectral`` (they were dropped)."""
    g = graphnn.extract(llama_folder)
    local = graphnn.analyse(g, centrality=False, core=False, spectral=True)
    dist = graphnn.analyse(g, client=client, centrality=False, core=False, spectral=True)
    assert set(dist.options) == set(local.options) | {"dask"}
    assert dist.options["weightwatcher"] is False and local.options["weightwatcher"] is False
    assert set(local.timings) <= set(dist.timings)
    assert 0 < dist.timings["spectral"] <= dist.runtime_s * len(client.scheduler_info()["workers"])
    assert "_spectral_s" not in dist.blocks.columns


def test_placement_is_by_shard(client, llama_folder):
    g = graphnn.extract(llama_folder)
    files = tensor_files(g)
    workers = sorted(client.scheduler_info()["workers"])
    placed = assign(g, workers)
    assert sorted(b.name for bs in placed.values() for b in bs) == sorted(g.blocks)
    shards = {w: {files[b.param] for b in bs} for w, bs in placed.items()}
    assert len(shards) == 2
    a, b = shards.values()
    assert not a & b  # each shard is opened by one worker only
    for bs in placed.values():  # loaders reopen the file by path: no tensor data travels
        for blk in bs:
            assert type(blk._load).__name__ == "ShardTensor"
            assert torch.equal(blk.matrix(), g.blocks[blk.name].matrix())


def test_thresholded_and_block_scope_cores(client, llama_folder):
    g = graphnn.extract(llama_folder)
    for opts in ({"core_threshold": 0.125}, {"core_scope": "block"}):
        local = graphnn.analyse(graphnn.extract(llama_folder), centrality=False, **opts)
        dist = graphnn.analyse(g, client=client, centrality=False, **opts)
        _assert_same(local, dist)
    assert str(dist.neurons["core_in"].dtype) == str(local.neurons["core_in"].dtype)


def test_in_memory_graph_with_two_components(client):
    gen = torch.Generator().manual_seed(3)

    def w(*shape, scale=1):
        return scale * torch.randint(0, 17, shape, generator=gen).double() / 16

    g = graphnn.LayeredGraph.from_matrices(
        {"a": 5, "b": 7, "c": 4, "d": 6, "e": 3},
        {"ab": ("a", "b", w(7, 5)), "bc": ("b", "c", w(4, 7)), "de": ("d", "e", w(3, 6, scale=3)),
         "cc": ("c", "c", w(4, 4))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = graphnn.analyse(g)
        dist = graphnn.analyse(g, client=client)
    _assert_same(local, dist, centrality_atol=1e-8)
    assert dist.centrality_info["components"] == local.centrality_info["components"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = graphnn.analyse(g, per_component=True, core=False)
        dist = graphnn.analyse(g, client=client, per_component=True, core=False)
    _assert_same(local, dist, centrality_atol=1e-8)  # the component column too
    assert set(local.neurons["component"]) == {0, 1}
    np.testing.assert_allclose(dist.centrality_info["component_eigenvalues"],
                               local.centrality_info["component_eigenvalues"], rtol=1e-10)


def test_usage_errors(client, llama_folder):
    g = graphnn.extract(llama_folder)
    with pytest.raises(InvalidParameterError, match="distributed.Client"):
        graphnn.analyse(g, client="tcp://nowhere:1")
    with pytest.raises(InvalidParameterError, match="core_threshold"):
        graphnn.analyse(g, client=client, core_top=0.5)
    with pytest.raises(InvalidParameterError, match="core_scope"):
        graphnn.analyse(g, client=client, core_scope="layer")
    assert parse_address("local:3") == ("local", 3)
    assert parse_address("tcp://10.0.0.1:8786") == ("scheduler", "tcp://10.0.0.1:8786")
    for bad in ("local:0", "local:x", "10.0.0.1:8786", "http://x:1", ""):
        with pytest.raises(InvalidParameterError, match="local:N"):
            parse_address(bad)


@pytest.mark.parametrize("seed", range(6))
def test_peeling_equals_single_process_on_random_graphs(client, seed):
    """Random layered graphs with small-integer weights (many exact ties, zero edges, a self-block
    and parallel blocks): the distributed peeling's batches and tie rounds give the single
    process's numbers exactly."""
    gen = torch.Generator().manual_seed(100 + seed)
    sizes = {f"p{i}": int(torch.randint(2, 9, (1,), generator=gen)) for i in range(4)}
    names = list(sizes)

    def w(dst, src):
        m = torch.randint(0, 4, (sizes[dst], sizes[src]), generator=gen).double()
        return m * (torch.rand(m.shape, generator=gen) < 0.7)

    blocks = {f"{a}->{b}": (a, b, w(b, a)) for a, b in zip(names, names[1:])}
    blocks["p1->p1"] = ("p1", "p1", w("p1", "p1"))
    blocks["p0->p2"] = ("p0", "p2", w("p2", "p0"))
    blocks["p0->p1 again"] = ("p0", "p1", w("p1", "p0"))
    g = graphnn.LayeredGraph.from_matrices(sizes, blocks)
    for opts in ({}, {"core_threshold": 2.0}):
        local = graphnn.analyse(g, centrality=False, **opts)
        dist = graphnn.analyse(g, client=client, centrality=False, **opts)
        assert np.array_equal(local.neurons["core"].to_numpy(), dist.neurons["core"].to_numpy()), opts


def test_cli_bad_dask_address_is_a_usage_error(llama_folder):
    from typer.testing import CliRunner

    from graphnn.cli import app

    for bad in ("local:0", "scheduler:8786"):
        r = CliRunner().invoke(app, ["analyse", str(llama_folder), "--dask", bad])
        assert r.exit_code == 2, r.output
        assert "--dask" in r.output and "local:N" in r.output


def test_nonfinite_weights_raise_as_in_one_process(client):
    w = torch.ones(3, 2)
    w[1, 0] = float("nan")
    g = graphnn.LayeredGraph.from_matrices({"a": 2, "b": 3}, {"w": ("a", "b", w)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(graphnn.NonFiniteWeightsError):
            graphnn.analyse(g)
        with pytest.raises(graphnn.NonFiniteWeightsError):
            graphnn.analyse(g, client=client)
