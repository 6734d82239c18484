"""Scale benchmark (issue 11 §1, §4): graphnn on a Llama-shaped bf16 sharded safetensors folder.

    python benchmarks/bench_scale.py --layers 2          # quick try (1.3 GB)
    ./dev bench scale --layers 8                         # 3.8 GB
    python benchmarks/bench_scale.py                     # the full 32-layer 6.7B shape (13.5 GB)

The folder is written by this script as Hugging Face writes one (``model.safetensors.index.json``,
``config.json`` with ``model_type: llama``, the real tensor names ``model.layers.{i}.self_attn.q_proj.weight``
...), shard by shard, with random bf16 data (normal, std 0.02) generated a few MB at a time: never the
whole model, nor a whole tensor, in memory. It goes into a scratch folder that is removed at the end
(``--keep`` keeps it and a later run with the same shape and ``--dir`` reuses it).

Then each command runs in a fresh subprocess, with its wall time and the peak RSS of its process tree
(psutil, polled every 20 ms): ``graphnn describe``, ``graphnn analyse``, ``graphnn report``, ``graphnn
rewire FOLDER -o OUT --method pa --mode fast`` (its output is checked to load with safetensors), and,
with ``--dask N``, ``graphnn.analyse(g, client=...)`` on a LocalCluster of N workers whose
``memory_limit`` is below the checkpoint's size (bytes moved per matrix-vector product printed).
Beside each figure: the goal of issue 11 and the ratio of the time to a plain sequential read of the
shards (the measured read rate is printed). Before the read and before each command the shards are
dropped from the page cache with ``posix_fadvise(DONTNEED)`` (cold reads; ``--warm`` keeps the
cache); where that is not possible the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

GB = 1e9
#: Goals of issue 11 §1 for the full 32-layer model.
GOAL_DESCRIBE_S = 5.0
GOAL_ANALYSE_S = 600.0
GOAL_REPORT_S = 720.0
GOAL_RSS_GB = 4.0
GOAL_READ_RATIO = 2.0
FULL_LAYERS = 32


def llama_shapes(layers: int, hidden: int, inter: int, heads: int, kv_heads: int, vocab: int) -> list[tuple[str, tuple]]:
    """Tensor names and shapes of a Llama checkpoint in model order (as ``save_pretrained`` stores them)."""
    kv = hidden // heads * kv_heads
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.k_proj.weight", (kv, hidden)),
                (p + "self_attn.v_proj.weight", (kv, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                (p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter)), (p + "input_layernorm.weight", (hidden,)),
                (p + "post_attention_layernorm.weight", (hidden,))]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_shard(path: Path, tensors: list[tuple[str, tuple]], gen: torch.Generator, chunk_elements: int = 1 << 22) -> None:
    """One safetensors file (header, then each tensor's bf16 bytes), written ``chunk_elements`` values
    at a time: norm weights are ones, matrices normal(0, 0.02)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        nbytes = 2 * _numel(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in tensors:
            total = _numel(shape)
            for start in range(0, total, chunk_elements):
                k = min(chunk_elements, total - start)
                if len(shape) == 1:
                    values = torch.ones(k, dtype=torch.bfloat16)
                else:
                    values = (torch.randn(k, generator=gen) * 0.02).to(torch.bfloat16)
                f.write(values.view(torch.int16).numpy().tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_folder(folder: Path, args) -> list[Path]:
    """The sharded Llama folder (reused when ``config.json`` already says the same shape)."""
    shapes = llama_shapes(args.layers, args.hidden, args.intermediate, args.heads, args.kv_heads, args.vocab)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": args.hidden,
              "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
              "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "hidden_act": "silu"}
    index_path = folder / "model.safetensors.index.json"
    if (folder / "config.json").exists() and index_path.exists():
        if json.loads((folder / "config.json").read_text()) == config:
            shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
            if all((folder / s).exists() for s in shards):
                print(f"reusing {folder}", file=sys.stderr)
                return [folder / s for s in shards]
    folder.mkdir(parents=True, exist_ok=True)
    limit = int(args.shard_gb * GB)
    groups, size = [[]], 0
    for name, shape in shapes:
        nbytes = 2 * _numel(shape)
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    gen = torch.Generator().manual_seed(0)
    weight_map, files = {}, []
    t0 = time.perf_counter()
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        write_shard(folder / fname, group, gen)
        weight_map.update(dict.fromkeys((n for n, _ in group), fname))
        files.append(folder / fname)
        print(f"  wrote {fname} ({sum(2 * _numel(s) for _, s in group) / GB:.2f} GB, "
              f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    total = sum(2 * _numel(s) for _, s in shapes)
    index_path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return files


def drop_cache(files: list[Path]) -> bool:
    """Evict the files' pages from the page cache (clean pages: no root needed). False if unsupported."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        for p in files:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return True
    except OSError:
        return False


def read_rate(files: list[Path], block: int = 16 << 20) -> tuple[int, float]:
    """Bytes and seconds of a plain sequential read of ``files``."""
    buf = bytearray(block)
    view = memoryview(buf)
    total, t0 = 0, time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - t0


def _rss_parts(pid: int) -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of one process, from ``/proc/PID/status``
    (``RssAnon + RssShmem``, ``RssFile``); ``(0, 0)`` where that file does not exist."""
    anon = file = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    anon += int(line.split()[1]) * 1024
                elif line.startswith("RssFile:"):
                    file += int(line.split()[1]) * 1024
    except OSError:
        pass
    return anon, file


def measure(cmd: list[str], env: dict, timeout: float | None) -> dict:
    """Wall time, CPU time (user + system of the command and its children), peak RSS of the
    process tree (bytes; polled every 20 ms) and, where ``/proc`` tells, the peak of its
    anonymous part (private memory: what the command really holds) and of its file-backed part
    (pages of memory-mapped shards: page cache the kernel may drop at any time), exit code."""
    import psutil
    import resource

    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
    ps = psutil.Process(proc.pid)
    peak = peak_anon = peak_file = 0
    while proc.poll() is None:
        try:
            procs = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs))
            parts = [_rss_parts(p.pid) for p in procs]
            peak_anon = max(peak_anon, sum(a for a, _ in parts))
            peak_file = max(peak_file, sum(f for _, f in parts))
        except psutil.Error:
            pass
        if timeout and time.perf_counter() - t0 > timeout:
            proc.kill()
            break
        time.sleep(0.02)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    out.seek(0)
    err.seek(0)
    head = out.read(65536).decode(errors="replace")
    out.seek(0)
    stdout = out.read()[-4000:].decode(errors="replace")
    stderr = err.read().decode(errors="replace")
    return {"wall_s": wall, "cpu_s": cpu, "stdout_head": head, "rss": peak, "anon": peak_anon or None, "file": peak_file or None,
            "rc": rc, "stdout": stdout, "stderr": stderr}


_STEP_LINE = re.compile(r"graphnn: (\w[\w-]*): (\d+)/(\d+) \(([\d.]+) s\)")


def step_times(stderr: str) -> list[tuple[str, float]]:
    """``(step, seconds)`` of each step a ``-v`` run logged as finished (``graphnn: load: 9/9
    (12.3 s)`` gives the time since the command started), as durations in order."""
    ends: dict[str, float] = {}
    for m in _STEP_LINE.finditer(stderr):
        ends[m.group(1)] = float(m.group(4))  # a step reported twice (a 0/1 step) keeps its last end
    out, prev = [], 0.0
    for name, end in sorted(ends.items(), key=lambda kv: kv[1]):
        out.append((name, end - prev))
        prev = end
    return out


#: What each logged step is: (label, whether it streams every weight once per pass).
_STEP_KIND = {"extract": ("start-up (imports) + headers", False), "load": ("1 pass: read, |w| sums, strength", True),
              "centrality": ("eigenvector centrality", True), "hypercore": ("weighted hypercore, all levels", True),
              "null": ("null models", True), "report": ("HTML rendering", False),
              "rewire": ("1 pass: read the weights, PA, write", True)}


def passes_report(name: str, r: dict, nbytes: int, cold: float, warm: float) -> list[str]:
    """Lines with each step of a ``-v`` run: its time and, for the steps that stream the weights,
    the time per pass over the ratio to a plain read of the checkpoint's bytes, cold (from disk)
    and warm (from the page cache). Centrality passes are its matrix-vector products (counted in
    analyse's JSON); the hypercore's passes are not counted (its total is given)."""
    lines = []
    m = re.search(r'"centrality_info":\s*\{[^}]*"iterations":\s*(\d+)', r.get("stdout_head", ""))
    iters = int(m.group(1)) if m else None
    accounted = 0.0
    for step, secs in step_times(r["stderr"]):
        accounted += secs
        label, streams = _STEP_KIND.get(step, (step, False))
        if not streams:
            lines.append(f"    {name}/{step:<11} {secs:8.1f} s  ({label}; not a pass over the weights)")
            continue
        k = iters if step == "centrality" and iters else 1
        if step == "centrality":
            label = f"{k} matvecs, {secs / k:.2f} s each" if iters else "matvec count not printed by this command"
        lines.append(f"    {name}/{step:<11} {secs:8.1f} s  ({label}; per pass {secs / k / cold:6.2f}x cold read, "
                     f"{secs / k / warm:6.2f}x warm read)")
    rest = r["wall_s"] - accounted
    if accounted and rest > 0:
        lines.append(f"    {name}/{'rest':<11} {rest:8.1f} s  (after the last step: tables, SHA-256 of the input (1 read pass), output, exit: "
                     f"{rest / cold:6.2f}x cold read)")
    return lines


_DASK_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import graphnn
from graphnn.distributed import close, connect
folder, workers, limit, core = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
client = connect(f"local:{workers}", memory_limit=limit)
t0 = time.perf_counter()
a = graphnn.analyse(graphnn.extract(folder), client=client, core=core)
info = a.timings["dask"]
print(json.dumps({"analyse_s": time.perf_counter() - t0, "bytes_per_matvec": info["bytes_per_matvec"],
                  "bytes": info["bytes"], "workers": info["workers"], "rounds": info["hypercore_rounds"],
                  "iterations": a.centrality_info.get("iterations")}))
close(client)
"""


def check_rewired(out: Path, files: list[Path]) -> str:
    from safetensors import safe_open

    names = 0
    for p in files:
        q = out / p.name
        if not q.exists():
            return f"missing {q.name}"
        with safe_open(str(q), framework="pt") as f:
            names += len(list(f.keys()))
    return f"loads with safetensors ({names} tensors)"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=FULL_LAYERS, help="decoder layers (32: the 6.7B shape)")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None,
                    help="key/value heads (default: --heads; fewer: grouped-query attention, e.g. 8)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-gb", type=float, default=2.0, help="largest shard size (GB)")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a new one under $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the folder (reused by a later run with --dir)")
    ap.add_argument("--warm", action="store_true", help="do not drop the shards from the page cache")
    ap.add_argument("--only", default="describe,analyse,report,rewire",
                    help="comma-separated passes among describe, analyse, report, rewire")
    ap.add_argument("--dask", type=int, default=0, metavar="N",
                    help="also analyse on a LocalCluster of N workers, memory_limit max(1.5 x checkpoint / N, "
                         "1.5 GB) each: below the checkpoint's size from --layers 4 with N=2")
    ap.add_argument("--dask-core", action="store_true",
                    help="include the hypercore in the Dask pass (one round trip per peeling round)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per pass")
    args = ap.parse_args(argv)
    if args.layers < 1:
        ap.error("--layers must be >= 1")
    args.kv_heads = args.heads if args.kv_heads is None else args.kv_heads
    if args.hidden % args.heads or args.heads % args.kv_heads:
        ap.error("--hidden must be a multiple of --heads, and --heads of --kv-heads")
    passes = [p.strip() for p in args.only.split(",") if p.strip()]

    shapes = llama_shapes(args.layers, args.hidden, args.intermediate, args.heads, args.kv_heads, args.vocab)
    need = sum(2 * _numel(s) for _, s in shapes)
    own_root = args.dir is None
    root = args.dir or Path(tempfile.mkdtemp(prefix="graphnn-bench-scale-"))
    free = shutil.disk_usage(root if root.exists() else root.parent).free
    factor = 2 if "rewire" in passes else 1
    if free < factor * need * 1.05 and not (root / "model" / "config.json").exists():
        print(f"not enough disk: {need * factor / GB:.1f} GB needed under {root}, {free / GB:.1f} GB free; "
              "use --layers, --dir or --only", file=sys.stderr)
        return 2
    folder, out = root / "model", root / "rewired"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    graphnn_cmd = [sys.executable, "-m", "graphnn"]
    print(f"Llama shape: {args.layers} layers, hidden {args.hidden}, intermediate {args.intermediate}, "
          f"{args.heads} heads ({args.kv_heads} kv), vocab {args.vocab}: {need / 2 / 1e9:.2f}B parameters, "
          f"{need / GB:.2f} GB bf16; machine: {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.0f} GB RAM; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    try:
        t0 = time.perf_counter()
        files = write_folder(folder, args)
        print(f"folder written in {time.perf_counter() - t0:.0f} s: {len(files)} shards, largest "
              f"{max(p.stat().st_size for p in files) / GB:.2f} GB", flush=True)
        largest = max(p.stat().st_size for p in files)
        cold = (not args.warm) and drop_cache(files)
        nbytes, secs = read_rate(files)
        rate = nbytes / secs
        cache_note = "cold (page cache dropped)" if cold else ("warm (--warm)" if args.warm else
                                                                "page cache could NOT be dropped: warm figures")
        print(f"sequential read: {nbytes / GB:.2f} GB in {secs:.1f} s = {rate / GB:.2f} GB/s, {cache_note}", flush=True)
        _, warm_secs = read_rate(files)  # again, now from the page cache where it fits
        print(f"second read: {nbytes / GB / warm_secs:.2f} GB/s ({warm_secs:.1f} s; page cache where the shards fit)",
              flush=True)
        load_start = os.getloadavg()
        print(f"load average (1, 5, 15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)
        pass_lines: list[str] = []

        # time goals pro-rated by bytes (the passes stream the weights): full model = 32 layers, same widths
        full = sum(2 * _numel(sh) for _, sh in llama_shapes(FULL_LAYERS, args.hidden, args.intermediate, args.heads,
                                                              args.kv_heads, args.vocab))
        scale = need / full
        rows = []
        r = measure(graphnn_cmd + ["--version"], env, args.timeout)  # interpreter + import cost in every pass
        rows.append(("start-up", r, "python -m graphnn --version (part of every pass)", "-"))
        # -v: each step logs its end time (per-pass figures); analyse prints the layer table as JSON
        cmds = {
            "describe": graphnn_cmd + ["describe", str(folder), "-f", "json", "-q"],
            "analyse": graphnn_cmd + ["analyse", str(folder), "-f", "json", "--table", "layers", "-v"],
            "report": graphnn_cmd + ["report", str(folder), "-o", str(root / "report.html"), "-v"],
            "rewire": graphnn_cmd + ["rewire", str(folder), "-o", str(out), "--method", "pa", "--mode", "fast",
                                     "--seed", "0", "-v"],
        }
        goals = {"describe": (f"<= {GOAL_DESCRIBE_S:.0f} s", GOAL_DESCRIBE_S, None),
                 "analyse": (f"<= {GOAL_ANALYSE_S * scale:.0f} s ({GOAL_ANALYSE_S / 60:.0f} min x {scale:.3f} of the bytes), "
                             f"RSS <= {GOAL_RSS_GB:.0f} GB", GOAL_ANALYSE_S * scale, GOAL_RSS_GB * GB),
                 "report": (f"<= {GOAL_REPORT_S * scale:.0f} s ({GOAL_REPORT_S / 60:.0f} min x {scale:.3f} of the bytes), "
                            f"RSS <= {GOAL_RSS_GB:.0f} GB", GOAL_REPORT_S * scale, GOAL_RSS_GB * GB),
                 "rewire": (f"RSS <= 3 x largest shard = {3 * largest / GB:.1f} GB", None, 3 * largest)}
        for name in passes:
            if name not in cmds:
                print(f"unknown pass {name!r} (have: {', '.join(cmds)})", file=sys.stderr)
                return 2
            if name == "rewire":
                if shutil.disk_usage(root).free < need * 1.05:
                    rows.append((name, None, "not run: not enough disk for the output", goals[name][0]))
                    continue
                shutil.rmtree(out, ignore_errors=True)
            if name == "report":
                (root / "report.html").unlink(missing_ok=True)  # left by an earlier run with --keep
            if not args.warm:
                drop_cache(files)
            r = measure(cmds[name], env, args.timeout)
            extra = ""
            if r["rc"] != 0:
                errors = [ln for ln in r["stderr"].strip().splitlines() if "error" in ln.lower()]
                extra = f"exit {r['rc']}: {(errors or r['stderr'].strip().splitlines() or [''])[-1]}"
            elif name == "rewire":
                extra = check_rewired(out, files)
                shutil.rmtree(out, ignore_errors=True)
            text, t_goal, rss_goal = goals[name]
            met = []
            if t_goal is not None:
                met.append("time ok" if r["wall_s"] <= t_goal else f"time {r['wall_s'] / t_goal:.1f}x goal")
            if rss_goal is not None:
                met.append("RSS ok" if r["rss"] <= rss_goal else f"RSS {r['rss'] / rss_goal:.1f}x goal")
                if r["anon"] is not None and r["rss"] > rss_goal:
                    met.append("private part ok" if r["anon"] <= rss_goal else
                               f"private part {r['anon'] / rss_goal:.1f}x goal")
            if name != "describe":
                ratio = r["wall_s"] / secs
                met.append(f"read ratio {'ok' if ratio <= GOAL_READ_RATIO else 'over 2x'}")
            rows.append((name, r, "; ".join(filter(None, [extra] + met)), text))
            if r["rc"] == 0 and name != "describe":
                pass_lines += passes_report(name, r, nbytes, secs, warm_secs)
            la = os.getloadavg()
            print(f"  {name}: {r['wall_s']:.1f} s (CPU {r['cpu_s']:.1f} s), peak RSS {r['rss'] / GB:.2f} GB "
                  f"{extra} [load {la[0]:.1f}]", file=sys.stderr, flush=True)

        if args.dask:
            limit = int(need / args.dask * 1.5) if need / args.dask * 1.5 < need else int(need * 0.9)
            limit = max(limit, int(1.5 * GB))
            if not args.warm:
                drop_cache(files)
            r = measure([sys.executable, "-c", _DASK_SCRIPT, str(folder), str(args.dask), str(limit),
                         "1" if args.dask_core else "0"], env, args.timeout)
            if r["rc"] == 0:
                d = json.loads(r["stdout"].strip().splitlines()[-1])
                note = (f"completed: {d['workers']} workers, {d['iterations']} matvecs, "
                        f"{d['bytes_per_matvec'] / 1e6:.2f} MB moved per matvec, bytes by step {d['bytes']}"
                        + (f", {d['rounds']} peeling rounds" if args.dask_core else ", hypercore off (--dask-core)"))
            else:
                note = f"exit {r['rc']}: {r['stderr'].strip().splitlines()[-1] if r['stderr'].strip() else ''}"
            rows.append((f"dask x{args.dask}", r,
                         f"{note}; memory_limit {limit / GB:.2f} GB/worker "
                         + (f"< checkpoint {need / GB:.2f} GB" if limit < need else
                            f"(1.5 GB floor; NOT below the {need / GB:.2f} GB checkpoint at this size)"),
                         "completes with workers smaller than the checkpoint"))

        print()
        print(f"{'pass':<10} {'wall s':>9} {'CPU s':>8} {'peak RSS GB':>12} {'private':>8} {'mapped':>7} "
              f"{'x read':>7}  goal (issue 11)  |  result")
        for name, r, note, goal in rows:
            if r is None:
                print(f"{name:<10} {'-':>9} {'-':>8} {'-':>12} {'-':>8} {'-':>7} {'':>7}  {goal}  |  {note}")
                continue
            gb = (lambda v: f"{v / GB:.2f}" if v is not None else "-")
            x = f"{r['wall_s'] / secs:7.2f}" if name not in ("describe", "start-up") else f"{'':>7}"
            print(f"{name:<10} {r['wall_s']:9.1f} {r['cpu_s']:8.1f} {gb(r['rss']):>12} {gb(r['anon']):>8} "
                  f"{gb(r['file']):>7} {x}  {goal}  |  {note}")
        print(f"read rate {rate / GB:.2f} GB/s cold ({nbytes / GB:.2f} GB in {secs:.1f} s, {cache_note}), "
              f"{nbytes / GB / warm_secs:.2f} GB/s warm; 'x read' = wall time / the cold read time (goal <= 2 per "
              "streaming pass); 'private' = anonymous memory, 'mapped' = file pages of memory-mapped shards "
              "(page cache, dropped by the kernel under pressure), peaks of each")
        la = os.getloadavg()
        print(f"load average (1, 5, 15 min) at the start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
              f"at the end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {os.cpu_count()} cores")
        if pass_lines:
            print("streaming passes (from each command's -v step log; a pass reads every weight once):")
            print("\n".join(pass_lines))
        return 0
    finally:
        if args.keep:
            print(f"kept {root} (rerun with --dir {root} to reuse it)", file=sys.stderr)
        elif own_root:
            shutil.rmtree(root, ignore_errors=True)
        else:  # only what this script wrote into the given folder
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            (root / "report.html").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
