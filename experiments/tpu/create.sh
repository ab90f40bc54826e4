#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice, e.g.
#   experiments/tpu/create.sh --name rw --zone us-west4-a --accelerator-type v5litepod-8
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
create_tpu
