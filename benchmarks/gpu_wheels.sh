#!/usr/bin/env bash
# Downloads every wheel benchmarks/accelerator_check.sh needs beyond JAX's CUDA wheels (and
# the torch a GPU image brings) into one directory, for a GPU machine without a package
# index: cp312 manylinux x86_64 binaries and pure-Python wheels, no dependencies resolved
# (the list below is the closure, pinned to the versions the project is tested with).
#
#   bash benchmarks/gpu_wheels.sh [DIR]        # default DIR: ./.whl (about 34 MB)
#   PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh /tmp/wheels
#   WITH_TENSORSTORE=1 bash benchmarks/gpu_wheels.sh   # + tensorstore (21 MB; GPU images with
#                                                      # orbax have it), orbax-checkpoint's need
#
# accelerator_check.sh installs ./.whl (or $WHEELS) with `pip install --no-index --no-deps
# --target`, ahead of whatever the machine has. Needs pip and a package index here only.
set -euo pipefail
DIR=${1:-$(dirname "$0")/../.whl}
PY_VERSION=${PYTHON_VERSION:-3.12}
mkdir -p "$DIR"
# What the check imports (the project, its tests, the HF peer), and what those import;
# left out: optional speed-ups (uvloop, hf-xet), and jax's and torch's own dependencies.
WHEELS=(
  flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8 grain==0.2.18 array-record==0.8.6
  ml-collections==1.1.0 sentencepiece==0.2.3 etils==1.15.0 portpicker==1.6.0 msgpack==1.2.4
  rich==15.0.0 PyYAML==6.0.4 transformers==4.57.6 pytest==9.2.0
  absl-py==2.5.1 aiofiles==25.1.0 attrs==26.1.0 certifi==2026.10.19.post1
  charset-normalizer==3.5.3 cloudpickle==3.1.3 colorama==0.4.6 filelock==4.3.2
  fsspec==2026.9.0 huggingface-hub==0.36.2 humanize==4.17.0 idna==3.21
  iniconfig==2.3.1 markdown-it-py==4.3.0 mdurl==0.1.2 packaging==26.4 pluggy==1.7.0
  prometheus-client==0.26.0 protobuf==7.36.2 psutil==7.2.2 pygments==2.21.0 regex==2026.12.2
  requests==2.34.2 safetensors==0.8.0 simplejson==4.3.0 tokenizers==0.22.2 tqdm==4.70.1
  treescope==0.1.10 typing-extensions==4.16.0 urllib3==2.8.0 zipp==4.1.2
)
[[ -n "${WITH_TENSORSTORE:-}" ]] && WHEELS+=(tensorstore==0.1.86)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DIR" "${WHEELS[@]}"
echo "$(find "$DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
