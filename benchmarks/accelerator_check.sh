#!/usr/bin/env bash
# One prepared check for a GPU (or TPU) machine: at most 6 minutes from a cold start, each
# part with its own time limit and result file under $OUT, in this order:
#   1. train:     our train step at base and large in bf16 at the batch that fills the
#                 device, with MFU; HF PyTorch T5 (eager, torch.compile) at the T5-small and
#                 base shapes at the same batch; ratios and PASS/FAIL (accelerator_train.py)
#   2. attention: attention scaling 1k..32k in bf16, dense through the fused kernel the
#                 dispatcher picks, every sparse kind, PASS/FAIL (attention_scaling.py)
#   3. decode:    greedy and beam 4 at batch 1, 8, 64 against HF generate, bf16 and fp32
#                 (decode.py's accelerator defaults)
#   4. tests:     tests/accelerator_test.py: sparse == masked dense, the fused dense kernel ==
#                 plain dense on packed rows, cached == full decoding, in the device's dtype
#
#   bash benchmarks/accelerator_check.sh                   # results under $OUT or /tmp/...
#   OUT=results PEAK_TFLOPS=989 bash benchmarks/accelerator_check.sh
#   QUICK=1 bash benchmarks/accelerator_check.sh           # CPU smoke: tiny sizes, ~4 min
#   PARTS=train,tests bash benchmarks/accelerator_check.sh  # only these parts
#
# Wheels the machine lacks (grain, array-record, ml-collections, portpicker, and the pinned
# flax/optax/orbax-checkpoint) are installed from ./.whl when it exists (see
# benchmarks/README.md for the download line). PEAK_TFLOPS: the chip's dense bf16 peak
# (default: from the device name; 0 = unknown, no MFU). A part that fails or runs out of
# time is reported in summary.md without stopping the rest. Never part of the tests or CI.
set -uo pipefail
cd "$(dirname "$0")/.." || exit
OUT=${OUT:-/tmp/accelerator_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
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

PARTS=${PARTS:-train,attention,decode,tests}
part() {  # part NAME SECONDS COMMAND...: runs one part into $OUT/NAME.txt, notes how it ended
  local name=$1 limit=$2; shift 2
  [[ ",$PARTS," == *",$name,"* ]] || return 0
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  local how="ok"
  [[ $rc -eq 124 ]] && how="timed out after ${limit} s"
  [[ $rc -ne 0 && $rc -ne 124 ]] && how="failed (exit $rc)"
  echo "## $name: $how in $((SECONDS - began)) s" | tee -a "$OUT/summary.md"
  grep -E "PASS|FAIL|passed|failed|MFU|^\|" "$OUT/$name.txt" | tail -n 40 >> "$OUT/summary.md"
}

if [[ -n "${QUICK:-}" ]]; then  # the same parts, tiny, on any machine
  part train 120 $PY benchmarks/accelerator_train.py --quick --chip-peak-tflops "$PEAK_TFLOPS"
  part attention 90 $PY benchmarks/attention_scaling.py --markdown --lengths 256,512 \
    --repeats 1 --dtype bfloat16 --dense-implementation auto
  part decode 90 $PY benchmarks/decode.py --markdown --quick
  part tests 120 $PY -m pytest -q -p no:cacheprovider -x tests/accelerator_test.py
else
  part train 150 $PY benchmarks/accelerator_train.py --chip-peak-tflops "$PEAK_TFLOPS"
  part attention 60 $PY benchmarks/attention_scaling.py --markdown \
    --lengths 1024,4096,16384,32768 --dtype bfloat16 --dense-implementation auto \
    --memory-budget-gib 60
  part decode 75 $PY benchmarks/decode.py --markdown
  part tests 60 $PY -m pytest -q -p no:cacheprovider tests/accelerator_test.py
fi
echo "summary: $OUT/summary.md"
