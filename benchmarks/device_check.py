"""The GPU check: one short run of what only a CUDA machine can check (at most ``--budget``
seconds, 450 by default, so that with the start-up of ``device_check.sh`` it stays within 8
minutes), with every result written under ``--out``. ``benchmarks/device_check.sh`` picks (or
makes) the Python and runs this; see docs/device-check.md.

    python benchmarks/device_check.py --out DIR [--budget 450] [--workers N] [--skip-tests] [--skip-bench]

Steps, each in its own process with its own time limit (a crash or a hang in one is recorded and
the next step runs):

1. ``environment``: Python, torch and its CUDA build, the device, graphnn's dependencies (missing
   optional ones are listed, and the tests that need them are left out).
2. ``tests``: the test files whose code runs on CUDA when a device is present (the analyses use
   ``device="auto"``, and a few tests compare CUDA with CPU); JUnit XML in ``DIR/tests.xml``.
   Without CUDA, only the tests that need CUDA run (they skip), which checks the machinery.
3. ``bench``: the benchmarks' CUDA parts: ``graphnn.analyse`` of the 4 × 4096 MLP of
   ``bench_analyses`` (its ``--child big`` process) on CUDA and on CPU; PA fast rewiring of
   ``bench_rewire``'s ResNet-18 on CUDA; ``graphnn.signal_propagation`` of a width-2,048 ReLU
   MLP on CUDA against CPU (q̂ and χ̂₁ must agree). Without CUDA each part says "skipped".

Files under DIR: ``summary.json`` (every step: status, seconds, details), ``device_check.log``
(everything printed), ``tests.xml`` and ``bench.json``. The exit status is 0 when every step that
ran passed (skipped steps count as passed), else 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Test files whose code runs on CUDA when a device is present.
GPU_TEST_FILES = [
    "tests/test_sigprop_empirical.py",
    "tests/test_centrality.py",
    "tests/test_hypercore.py",
    "tests/test_strength.py",
    "tests/test_analyse.py",
    "tests/test_index_maps.py",
    "tests/test_rewire_pa.py",
    "tests/test_validation.py",
    "tests/test_use_copy.py",
]
#: The tests that need CUDA (they skip without it): the dry run on a CPU machine.
CUDA_ONLY_TESTS = ["tests/test_sigprop_empirical.py::test_runs_on_gpu_like_on_cpu",
                   "tests/test_use_copy.py::test_cuda_holds_bf16_weights_in_their_own_dtype_and_matches_the_cpu"]
#: Import name -> what is left out without it.
OPTIONAL = {"igraph": "tests with 'igraph' in their name", "transformers": "tests that importorskip it",
            "hypothesis": "property tests (collection fails without it)"}
REQUIRED = ["torch", "numpy", "scipy", "pandas", "safetensors", "networkx", "matplotlib", "seaborn", "jinja2",
            "typer", "rich", "pytest"]

_SIGPROP_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
import graphnn
width, device = int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
layers = []
for _ in range(4):
    lin = torch.nn.Linear(width, width)
    torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
    torch.nn.init.zeros_(lin.bias)
    layers += [lin, torch.nn.ReLU()]
model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
out = {}
for dev in ("cpu", device):
    t0 = time.perf_counter()
    sp = graphnn.signal_propagation(model, batch=64, probes=2, seed=0, device=dev)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    out[dev] = {"seconds": time.perf_counter() - t0, "q_hat": sp.layers["q_hat"].tolist(),
                "chi1_hat": sp.layers["chi1_hat"].dropna().tolist(), "phase_hat": sp.network["phase_hat"].iloc[0]}
a, b = out["cpu"], out[device]
out["q_hat_max_rel_diff"] = max(abs(x - y) / abs(x) for x, y in zip(a["q_hat"], b["q_hat"]))
out["chi1_hat_max_rel_diff"] = max(abs(x - y) / abs(x) for x, y in zip(a["chi1_hat"], b["chi1_hat"]))
out["ok"] = out["q_hat_max_rel_diff"] < 1e-3 and out["chi1_hat_max_rel_diff"] < 0.05 and a["phase_hat"] == b["phase_hat"]
print(json.dumps(out))
"""

_REWIRE_CHILD = r"""
import json, statistics, sys, time, torch
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/benchmarks")
from bench_rewire import ResNet18
from graphnn.rewire._targets import select_targets
from graphnn.rewire.pa import rewire_targets_
device, repeats = sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
model = ResNet18().to(device)
targets = select_targets(model)
before = [t.tensor.detach().flatten().sort().values.cpu() for t in targets]
rewire_targets_(targets, seed=1, mode="fast", device=device)  # warm-up
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    rewire_targets_(targets, seed=1, mode="fast", device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
after = [t.tensor.detach().flatten().sort().values.cpu() for t in targets]
same_values = all(torch.equal(x, y) for x, y in zip(before, after))  # PA permutes each tensor's entries
print(json.dumps({"device": device, "tensors": len(targets), "median_s": statistics.median(times),
                  "same_multiset": same_values, "ok": same_values}))
"""


class Run:
    """The summary and the log of one device check."""

    def __init__(self, out: Path, budget: float):
        self.out, self.budget, self.t0 = out, budget, time.monotonic()
        self.steps: list[dict] = []
        self.log = open(out / "device_check.log", "a", encoding="utf-8")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def sub(self, cmd: list[str], limit: float, env: dict | None = None) -> tuple[int, str, float]:
        """Run ``cmd`` for at most ``limit`` seconds (and what is left of the budget); its output
        goes to the log. Returns ``(exit status, stdout, seconds)``; 124 when it ran out of time."""
        limit = max(1.0, min(limit, self.left()))
        t0 = time.monotonic()
        self.say(f"$ {' '.join(cmd)}   (limit {limit:.0f} s)")
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env or child_env(), capture_output=True, text=True, timeout=limit)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc = 124
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")) \
                + f"\n[device_check] stopped after {limit:.0f} s\n"
        self.log.write(out + err)
        self.log.flush()
        return rc, out, time.monotonic() - t0

    def step(self, name: str, status: str, seconds: float, **details) -> dict:
        row = {"step": name, "status": status, "seconds": round(seconds, 2), **details}
        self.steps.append(row)
        self.say(f"[{name}] {status} ({seconds:.1f} s)" + (f": {details.get('note')}" if details.get("note") else ""))
        self.write_summary()
        return row

    def write_summary(self) -> None:
        doc = {"ok": all(s["status"] in ("passed", "skipped") for s in self.steps),
               "seconds": round(time.monotonic() - self.t0, 1), "budget_s": self.budget, "steps": self.steps}
        tmp = self.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, self.out / "summary.json")


def child_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def environment(run: Run) -> dict:
    t0 = time.monotonic()
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    info["missing_required"] = missing
    info["missing_optional"] = {m: why for m, why in OPTIONAL.items() if importlib.util.find_spec(m) is None}
    info["cuda"] = False
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda_build"] = torch.version.cuda
        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            props = torch.cuda.get_device_properties(0)
            info["device"] = torch.cuda.get_device_name(0)
            info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["device_count"] = torch.cuda.device_count()
            x = torch.randn(256, 256, device="cuda")
            info["matmul_ok"] = bool(torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-3, atol=1e-3))
    except Exception as e:  # noqa: BLE001 - recorded, the summary says what broke
        info["torch_error"] = f"{type(e).__name__}: {e}"
    rc, out, _ = run.sub([sys.executable, "-c", "import graphnn, sys; print(graphnn.__version__, "
                                              "sorted(m for m in ('torch', 'pandas') if m in sys.modules))"], 60)
    info["graphnn_import"] = out.strip() if rc == 0 else f"failed (exit {rc}, see the log)"
    ok = rc == 0 and not missing and "torch_error" not in info and info.get("matmul_ok", True)
    note = (f"{info.get('device', 'no CUDA device')}; torch {info.get('torch')} (CUDA build {info.get('torch_cuda_build')})"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; optional missing: {', '.join(info['missing_optional'])}" if info["missing_optional"] else ""))
    run.step("environment", "passed" if ok else "failed", time.monotonic() - t0, note=note, **info)
    return info


def tests(run: Run, info: dict, workers: int, limit: float) -> None:
    xml = run.out / "tests.xml"
    targets = GPU_TEST_FILES if info["cuda"] else CUDA_ONLY_TESTS
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(xml), *targets]
    if "igraph" in info["missing_optional"]:
        cmd += ["-k", "not igraph"]
    if workers > 1 and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(workers)]
    rc, out, seconds = run.sub(cmd, limit)
    counts = _junit_counts(xml)
    tail = "\n".join(out.strip().splitlines()[-3:])
    status = "passed" if rc == 0 else ("timeout" if rc == 124 else "failed")
    if not info["cuda"] and rc == 0:
        status = "skipped"
    run.step("tests", status, seconds, exit=rc, selection="gpu files" if info["cuda"] else "cuda-only tests (no CUDA)",
             note=f"{counts}; {tail.splitlines()[-1] if tail else ''}", **counts)


def _junit_counts(xml: Path) -> dict:
    if not xml.exists():
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def bench(run: Run, info: dict, limit: float) -> None:
    results: dict = {}
    parts = [
        ("analyse_4x4096_cuda", [sys.executable, "benchmarks/bench_analyses.py", "--child", "big", "3", "cuda"], 0.35),
        ("analyse_4x4096_cpu", [sys.executable, "benchmarks/bench_analyses.py", "--child", "big", "1", "cpu"], 0.25),
        ("pa_fast_resnet18_cuda", [sys.executable, "-c", _REWIRE_CHILD, str(ROOT), "cuda", "3"], 0.2),
        ("sigprop_mlp2048_cuda_vs_cpu", [sys.executable, "-c", _SIGPROP_CHILD, str(ROOT), "2048", "cuda"], 0.2),
    ]
    t_all = time.monotonic()
    for name, cmd, share in parts:
        if not info["cuda"]:
            results[name] = {"status": "skipped", "note": "no CUDA device"}
            run.say(f"[bench] {name}: skipped (no CUDA device)")
            continue
        rc, out, seconds = run.sub(cmd, share * limit)
        try:
            doc = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
        except (ValueError, IndexError):
            doc = {}
        ok = rc == 0 and doc.get("ok", True)
        results[name] = {"status": "passed" if ok else ("timeout" if rc == 124 else "failed"), "exit": rc,
                         "seconds": round(seconds, 2), **{k: v for k, v in doc.items() if not isinstance(v, list)}}
        run.say(f"[bench] {name}: {results[name]['status']} ({seconds:.1f} s) "
                + ", ".join(f"{k}={v}" for k, v in doc.items() if isinstance(v, (int, float, str, bool)))[:400])
    if "analyse_4x4096_cuda" in results and results["analyse_4x4096_cuda"].get("analyse_s") \
            and results.get("analyse_4x4096_cpu", {}).get("analyse_s"):
        results["analyse_speedup_cuda_vs_cpu_1_thread"] = round(
            results["analyse_4x4096_cpu"]["analyse_s"] / results["analyse_4x4096_cuda"]["analyse_s"], 1)
    tmp = run.out / ".bench.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run.out / "bench.json")
    statuses = {r["status"] for r in results.values() if isinstance(r, dict)}
    status = "skipped" if statuses == {"skipped"} else ("passed" if statuses <= {"passed"} else "failed")
    run.step("bench", status, time.monotonic() - t_all,
             note=", ".join(f"{k}: {v['status']}" for k, v in results.items() if isinstance(v, dict)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "device-check-out"))
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the checks (default 450)")
    p.add_argument("--workers", type=int, default=1, help="pytest-xdist workers for the tests (if installed)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    a = p.parse_args(argv)
    if a.budget <= 30:
        p.error("--budget must be more than 30 seconds")
    a.out.mkdir(parents=True, exist_ok=True)
    run = Run(a.out, a.budget)
    run.say(f"graphnn device check, {time.strftime('%Y-%m-%d %H:%M:%S')}, budget {a.budget:.0f} s, out {a.out}")
    info = environment(run)
    if not info["cuda"]:
        run.say("no CUDA device: the GPU parts are skipped (the steps below check only the machinery)")
    if a.skip_tests:
        run.step("tests", "skipped", 0.0, note="--skip-tests")
    else:
        tests(run, info, a.workers, limit=0.6 * run.left() if not a.skip_bench else run.left() - 5)
    if a.skip_bench:
        run.step("bench", "skipped", 0.0, note="--skip-bench")
    else:
        bench(run, info, limit=run.left() - 5)
    run.write_summary()
    ok = all(s["status"] in ("passed", "skipped") for s in run.steps)
    run.say(f"device check {'passed' if ok else 'FAILED'} in {time.monotonic() - run.t0:.0f} s: "
            + "; ".join(f"{s['step']} {s['status']}" for s in run.steps))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
