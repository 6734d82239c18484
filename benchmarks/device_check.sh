#!/usr/bin/env bash
# The GPU check (docs/device-check.md): on a machine with CUDA, the GPU-relevant tests and the
# benchmarks' CUDA parts in at most 8 minutes, results under $OUT (default ./device-check-out).
#
#   bash benchmarks/device_check.sh [--budget 450] [--workers N] [--skip-tests] [--skip-bench]
#
# Works from a fresh copy of the tree (no .venv needed). The Python is the first of $PYTHON,
# .venv/bin/python, python3, /opt/torch/.venv/bin/python3, python whose torch sees CUDA. If none
# does but the machine has a GPU (nvidia-smi) and pip reaches a registry, a venv with the CUDA
# torch wheel and graphnn[dev] is made in $DEVICE_VENV (default /tmp/graphnn-device-venv; that
# download takes minutes on top of the budget). Otherwise the first Python with any torch runs the
# check, and the GPU parts are skipped, saying so. graphnn is imported from this tree (PYTHONPATH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-check-out}
export OUT
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
log() { printf '[device_check] %s\n' "$*" | tee -a "$LOG" >&2; }

has_torch() { "$1" -c 'import torch' >/dev/null 2>&1; }
has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
recent() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; }

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
[ -x .venv/bin/python ] && candidates+=("$PWD/.venv/bin/python")
VENV=${DEVICE_VENV:-/tmp/graphnn-device-venv}
[ -x "$VENV/bin/python" ] && candidates+=("$VENV/bin/python")
for c in python3 /opt/torch/.venv/bin/python3 python; do
  p=$(command -v "$c" 2>/dev/null) && candidates+=("$p")
done

PY=""
for c in "${candidates[@]}"; do
  if recent "$c" && has_cuda "$c"; then PY=$c; break; fi
done

if [ -z "$PY" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  base=""
  for c in "${candidates[@]}"; do if recent "$c"; then base=$c; break; fi; done
  if [ -n "$base" ] && timeout 20 "$base" -m pip index versions torch >/dev/null 2>&1; then
    log "a GPU but no CUDA build of torch: making $VENV with the CUDA torch wheel (takes minutes)"
    if "$base" -m venv "$VENV" \
       && timeout 1500 "$VENV/bin/pip" install -q --disable-pip-version-check torch \
       && timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"; then
      has_cuda "$VENV/bin/python" && PY="$VENV/bin/python"
    else
      log "could not make $VENV (see pip's messages above)"
    fi
  else
    log "a GPU but no CUDA build of torch, and no package registry answers: cannot install one"
  fi
fi

if [ -z "$PY" ]; then
  for c in "${candidates[@]}"; do
    if recent "$c" && has_torch "$c"; then PY=$c; break; fi
  done
  if [ -z "$PY" ]; then
    log "no Python >= 3.10 with torch found (tried: ${candidates[*]:-none}); set PYTHON=/path/to/python"
    printf '{"ok": false, "steps": [], "error": "no Python with torch"}\n' > "$OUT/summary.json"
    exit 1
  fi
  log "no CUDA device for $PY: the GPU parts will be skipped"
fi

log "python: $PY"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >> "$LOG" 2>&1
"$PY" benchmarks/device_check.py --out "$OUT" "$@"
