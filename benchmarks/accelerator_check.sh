#!/usr/bin/env bash
# One prepared check for a GPU (or TPU) machine: every number inside one lease, at most
# 8 minutes in all on one H100 or H200 once JAX's CUDA wheels are installed (the parts'
# time limits add up to 465 s). Each part is its own process under `timeout`, streams its
# rows, and its verdicts (MFU, ratio to HF, PASS/FAIL) print as soon as it ends, most
# important first; a part that fails, runs out of memory or out of time is one line in
# summary.md and the next part runs:
#   train_base     ours at `base` (RoPE) in bf16: MFU, compile time        (accelerator_train.py)
#   hf_base        HF PyTorch T5 `base` + torch.compile at the same batch, in its own
#                  process (an OOM is one table row): ours / HF
#   train_base_t5  ours at `base` with T5's relative bias (the bias kernels)
#   train_large    ours at `large`: MFU
#   decode         greedy and beam 4 at batch 8 and 64, bf16, against HF generate (decode.py)
#   attention      dense (the dispatcher's kernel) and every sparse kind, 1k..16k, bf16
#   tests          tests/accelerator_test.py in the device's dtype
# Batches are fixed per device memory (no search at run time), rows x (256 + 64) tokens:
#   H200 (141 GB): base 128, large 64;  H100/H800 (80 GB): base 64, large 32;
#   anything else: base 16, large 8.   Override: BASE_BATCH=, LARGE_BATCH=.
# JAX preallocates XLA_PYTHON_CLIENT_MEM_FRACTION of the device (0.85 where JAX runs
# alone, 0.5 in the decode part, where HF's torch shares the device).
#
#   bash benchmarks/gpu_wheels.sh                          # here, once: wheels into ./.whl
#   bash benchmarks/accelerator_check.sh                   # there: results under $OUT
#   OUT=results PEAK_TFLOPS=989 bash benchmarks/accelerator_check.sh
#   QUICK=1 bash benchmarks/accelerator_check.sh           # CPU smoke: tiny sizes
#   PARTS=train_base,hf_base bash benchmarks/accelerator_check.sh  # only these parts
#
# The wheels in $WHEELS (default ./.whl, from benchmarks/gpu_wheels.sh) are installed with
# pip --no-index into a target directory put first on PYTHONPATH. PEAK_TFLOPS: the chip's
# dense bf16 peak (default: from the device name; 0 = unknown, no MFU). Never part of CI.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
OUT=${OUT:-/tmp/accelerator_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
WHEELS=${WHEELS:-.whl}
if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:$PWD/benchmarks:${PYTHONPATH:-}
PY=${PYTHON:-python3}

device=$($PY -c "import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)" 2>&1 | tail -1)
echo "# $device, $(date -u +%Y-%m-%d), jax $($PY -c 'import jax; print(jax.__version__)')" \
  | tee "$OUT/summary.md"
if [[ -z "${PEAK_TFLOPS:-}" ]]; then
  case "$device" in
    *H100*|*H200*|*H800*) PEAK_TFLOPS=989 ;;
    *A100*) PEAK_TFLOPS=312 ;;
    *L4*) PEAK_TFLOPS=121 ;;
    *"v5 lite"*|*v5e*) PEAK_TFLOPS=197 ;;
    *v5p*) PEAK_TFLOPS=459 ;;
    *v4*) PEAK_TFLOPS=275 ;;
    *) PEAK_TFLOPS=0 ;;
  esac
fi
case "$device" in
  *H200*) base=128 large=64 ;;
  *H100*|*H800*) base=64 large=32 ;;
  *) base=16 large=8 ;;
esac
BASE_BATCH=${BASE_BATCH:-$base}
LARGE_BATCH=${LARGE_BATCH:-$large}
echo "# batches: base $BASE_BATCH, large $LARGE_BATCH; peak $PEAK_TFLOPS TFLOP/s" \
  | tee -a "$OUT/summary.md"

PARTS=${PARTS:-train_base,hf_base,train_base_t5,train_large,decode,attention,tests}
part() {  # part NAME SECONDS MEM_FRACTION COMMAND...: one part, streamed into $OUT/NAME.txt
  local name=$1 limit=$2 fraction=$3; shift 3
  [[ ",$PARTS," == *",$name,"* ]] || return 0
  local began=$SECONDS
  XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  local how="ok"
  [[ $rc -eq 124 ]] && how="timed out after ${limit} s"
  [[ $rc -ne 0 && $rc -ne 124 ]] && how="failed (exit $rc): $(tail -n 1 "$OUT/$name.txt")"
  {
    echo "## $name: $how in $((SECONDS - began)) s"
    grep -E "PASS|FAIL|passed|failed|MFU|^\|" "$OUT/$name.txt" | tail -n 40
  } | tee -a "$OUT/summary.md"
}

train=(benchmarks/accelerator_train.py --chip-peak-tflops "$PEAK_TFLOPS")
if [[ -n "${QUICK:-}" ]]; then  # the same parts, tiny, on any machine
  part train_base 120 0.85 $PY "${train[@]}" --quick --preset tiny --header \
    --json "$OUT/train_base.json"
  part hf_base 120 0.85 $PY "${train[@]}" --quick --hf tiny --versus "$OUT/train_base.json"
  part train_base_t5 120 0.85 $PY "${train[@]}" --quick --preset tiny --position t5_bias
  part train_large 120 0.85 $PY "${train[@]}" --quick --preset mini
  part decode 120 0.5 $PY benchmarks/decode.py --markdown --quick
  part attention 90 0.85 $PY benchmarks/attention_scaling.py --markdown --lengths 256,512 \
    --repeats 1 --dtype bfloat16 --dense-implementation auto
  part tests 120 0.85 $PY -m pytest -q -p no:cacheprovider -x tests/accelerator_test.py
else
  part train_base 90 0.85 $PY "${train[@]}" --preset base --batch "$BASE_BATCH" --header \
    --json "$OUT/train_base.json"
  part hf_base 80 0.85 $PY "${train[@]}" --hf base --batch "$BASE_BATCH" \
    --versus "$OUT/train_base.json"
  part train_base_t5 70 0.85 $PY "${train[@]}" --preset base --position t5_bias \
    --batch "$BASE_BATCH"
  part train_large 85 0.85 $PY "${train[@]}" --preset large --batch "$LARGE_BATCH"
  part decode 60 0.5 $PY benchmarks/decode.py --markdown --batches 8,64 --weights bfloat16 \
    --repeats 2
  part attention 30 0.85 $PY benchmarks/attention_scaling.py --markdown \
    --lengths 1024,4096,16384 --repeats 2 --dtype bfloat16 --dense-implementation auto \
    --memory-budget-gib 40
  part tests 50 0.85 $PY -m pytest -q -p no:cacheprovider tests/accelerator_test.py
fi
echo "summary: $OUT/summary.md"
