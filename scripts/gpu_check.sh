#!/usr/bin/env bash
# The GPU check: CUDA tests and GPU benchmarks on a fresh CUDA machine without network, in at most
# ~6 minutes. NEVER RUN YET: no session of this project has had a GPU when this was written.
#
#   bash scripts/gpu_check.sh --prepare [PYVER]   on a machine WITH network (e.g. the build machine):
#       downloads the wheels the GPU machine lacks (environment.md: it has PyTorch+CUDA and Triton, but
#       no onnx/onnxruntime/onnxscript, maybe no pytest) into .whl/gpu (gitignored; ~45 MB: carry it),
#       for CPython PYVER (default: this python's, e.g. 3.11).
#   bash scripts/gpu_check.sh [OUT]               on the GPU machine: a venv over the machine's own torch
#       (--system-site-packages), the carried wheels, the package (--no-deps: keeps the machine's torch),
#       then the CUDA tests and the benchmarks. Logs and JSON go to OUT (default: $OUT, else out/gpu_check);
#       docs/benchmarks.md cites OUT/*.json. Each step has its own timeout; a failed step is logged and
#       the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl/gpu
PKGS="onnx onnxruntime onnxscript onnx-ir ml_dtypes protobuf flatbuffers pyyaml tqdm pytest pluggy iniconfig pytest-timeout"

if [ "${1:-}" = "--prepare" ]; then
  pyver=${2:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
  mkdir -p "$WHEELS"
  # --no-deps: numpy, sympy, packaging, typing_extensions come with the machine's torch
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$WHEELS" $PKGS 'ml_dtypes<0.6'
  du -sh "$WHEELS"
  exit 0
fi

OUTDIR=${1:-${OUT:-out/gpu_check}}
mkdir -p "$OUTDIR"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUTDIR/gpu_check.log"; }
step() {  # step NAME TIMEOUT_S CMD...: run, log, never abort the script
  local name=$1 limit=$2; shift 2
  log "start $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  log "end $name rc=$rc in $((SECONDS - t0))s"
  tail -n 25 "$OUTDIR/$name.log"
}

PY=${PYTHON:-python3}
if [ ! -x .venv-gpu/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv-gpu
fi
VPY=.venv-gpu/bin/python
if [ -d "$WHEELS" ]; then
  step install 45 "$VPY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps $(ls "$WHEELS"/*.whl)
fi
step install_package 30 "$VPY" -m pip install -q --no-deps --no-build-isolation -e .
"$VPY" - > "$OUTDIR/machine.json" <<'PY'
import json, platform, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "capability": list(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None}
for m in ("onnx", "onnxruntime", "onnxscript", "tensorrt"):
    try:
        info[m] = __import__(m).__version__
    except ImportError:
        info[m] = None
print(json.dumps(info, indent=1))
PY
cat "$OUTDIR/machine.json" | tee -a "$OUTDIR/gpu_check.log"

# CUDA tests (they skip on CPU): fp16 vs fp32 boxes, CUDA graphs vs eager, device preprocessing; then
# the core suite on this torch (the Detector on CUDA where the tests ask for it)
step test_cuda 75 "$VPY" -m pytest -q -p no:cacheprovider test/core/test_backends.py test/core/test_detector.py \
  test/core/test_preprocess.py test/core/test_bev_pool.py -rs
B=(.venv-gpu/bin/simdistill bench --device cuda --warmup 5 --iters 30)
step bench_r50_fp32 40 "${B[@]}" --preset r50 --precision fp32 --backend cudagraph --json "$OUTDIR/cuda_r50_fp32.json"
step bench_r50_fp16 40 "${B[@]}" --preset r50 --precision fp16 --backend cudagraph --json "$OUTDIR/cuda_r50_fp16.json"
step bench_r50_bf16 40 "${B[@]}" --preset r50 --precision bf16 --backend cudagraph --json "$OUTDIR/cuda_r50_bf16.json"
step bench_tiny_fp16 25 "${B[@]}" --preset tiny --precision fp16 --backend cudagraph --json "$OUTDIR/cuda_tiny_fp16.json"
# torch.compile and the ONNX backends last: compilation/export are the slow, optional part
step bench_r50_fp16_compiled 60 "${B[@]}" --preset r50 --precision fp16 --backend compiled,onnxruntime,tensorrt \
  --json "$OUTDIR/cuda_r50_fp16_compiled.json"
log "done; results in $OUTDIR"
