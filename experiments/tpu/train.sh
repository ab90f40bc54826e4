#!/usr/bin/env bash
# Starts `refinedweb train` on every worker of a TPU VM or pod slice, e.g.
#   experiments/tpu/train.sh --name rw --zone us-west4-a --workdir gs://BUCKET/runs/small \
#       --config experiments/train_small_builtin.py --config.train.num_steps=2000
# To go on on a smaller or larger slice (after a preemption, or to scale), create the new
# slice and run this again with the same --workdir: the run continues from its newest
# checkpoint with the same global batches (its config comes from the workdir; a
# --config.mesh.* flag may change the mesh, data.batch_size may not).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
start_training
