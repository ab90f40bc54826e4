#!/usr/bin/env bash
# One prepared check for a GPU (or TPU) machine, about 10 minutes in all:
#   1. sparse == dense attention and cached == full decoding, the tests, on the accelerator
#      (float32 matmuls at full precision: TF32 would exceed the tests' tolerances);
#   2. the attention scaling table, dense through cuDNN on a GPU (XLA elsewhere);
#   3. the train benchmark at `base` in bfloat16, with MFU against the chip's bfloat16 peak;
#   4. decoding tokens/s, ours only (the CPU peers say nothing here).
#
#   bash benchmarks/accelerator_check.sh                 # output under /tmp/accelerator_check
#   PEAK_TFLOPS=989 OUT=results bash benchmarks/accelerator_check.sh
#
# PEAK_TFLOPS: the chip's dense bfloat16 peak (default: looked up for H100/H200, A100,
# L4, v5e and v4 from the device name; 0 = unknown, no MFU). Each part has its own time
# limit, and a part that fails or runs out of time is reported without stopping the rest.
# Never part of the tests or CI, which run on CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/accelerator_check}
mkdir -p "$OUT"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}

device=$(python -c "import jax; d = jax.devices()[0]; print(d.platform, d.device_kind)")
echo "# $device, $(date -u +%Y-%m-%d), jax $(python -c 'import jax; print(jax.__version__)')" \
  | tee "$OUT/summary.md"
if [[ -z "${PEAK_TFLOPS:-}" ]]; then
  case "$device" in
    *H100*|*H200*|*H800*) PEAK_TFLOPS=989 ;;
    *A100*) PEAK_TFLOPS=312 ;;
    *L4*) PEAK_TFLOPS=121 ;;
    *"v5 lite"*|*v5e*) PEAK_TFLOPS=197 ;;
    *v4*) PEAK_TFLOPS=275 ;;
    *) PEAK_TFLOPS=0 ;;
  esac
fi
dense=xla
[[ "$device" == gpu* ]] && dense=cudnn

part() {  # part NAME SECONDS COMMAND...: runs one part, keeps its output, notes how it ended
  local name=$1 limit=$2; shift 2
  local began=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  local how="ok"
  [[ $rc -eq 124 ]] && how="timed out after ${limit} s"
  [[ $rc -ne 0 && $rc -ne 124 ]] && how="failed (exit $rc)"
  echo "## $name: $how in $((SECONDS - began)) s" | tee -a "$OUT/summary.md"
  grep -E "PASS|FAIL|passed|failed|MFU|^\|" "$OUT/$name.txt" | tail -n 40 >> "$OUT/summary.md"
}

# JAX_PLATFORMS is left unset: the tests' own subprocesses pin CPU, these in-process ones
# run on the accelerator.
JAX_DEFAULT_MATMUL_PRECISION=highest part tests 240 python -m pytest -q -p no:cacheprovider \
  tests/sparse_attention_test.py tests/sparse_model_test.py \
  "tests/decode_test.py::test_cached_greedy_equals_uncached_greedy" \
  "tests/decode_test.py::test_beam_search_keeps_its_beams_like_a_full_forward_reference"
part attention_scaling 150 python benchmarks/attention_scaling.py --markdown \
  --lengths 1024,4096,16384,32768 --dense-implementation "$dense" --memory-budget-gib 60
part train_base_bf16 150 python benchmarks/train_throughput.py --dtype bfloat16 \
  --presets base --batch 32 --steps 5 --no-peer --no-parts --bigbird-length 16384 \
  --chip-peak-tflops "$PEAK_TFLOPS"
part decode 90 python benchmarks/decode.py --markdown --no-peers --batches 1,8,64
echo "summary: $OUT/summary.md"
