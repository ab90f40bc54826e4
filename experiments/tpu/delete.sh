#!/usr/bin/env bash
# Deletes a TPU VM or pod slice (gcloud asks to confirm), e.g.
#   experiments/tpu/delete.sh --name rw --zone us-west4-a
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
delete_tpu
