#!/usr/bin/env bash
# Starts `refinedweb train` on every worker of a TPU VM or pod slice, e.g.
#   experiments/tpu/train.sh --name rw --zone us-west4-a --workdir gs://BUCKET/runs/small \
#       --config experiments/train_small_builtin.py --config.train.num_steps=2000
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
start_training
