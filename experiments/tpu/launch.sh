#!/usr/bin/env bash
# Creates a TPU VM or pod slice, installs the project on every worker and starts
# training on all of them: create.sh + install.sh + train.sh in one go, e.g.
#   experiments/tpu/launch.sh --name rw --zone us-east5-a --accelerator-type v5p-32 \
#       --repo https://github.com/ORG/refinedweb_jax.git --workdir gs://BUCKET/runs/base \
#       --config.model.preset=base
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
need_repo
need_workdir  # before anything is created
create_tpu
install_project
start_training
