#!/usr/bin/env bash
# Installs the project (git clone + Python 3.11 venv + jax[tpu]) on every worker, e.g.
#   experiments/tpu/install.sh --name rw --zone us-west4-a --repo https://github.com/ORG/refinedweb_jax.git
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_flags "$@"
install_project
