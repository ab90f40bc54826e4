# shellcheck shell=bash
# Shared by the Cloud TPU VM scripts: flags, the gcloud commands, and a runner that
# prints them instead (--dry-run). Sourced, not run.

USAGE="flags:
  --name NAME                TPU VM / pod slice name (required)
  --zone ZONE                e.g. us-west4-a for v5e, us-east5-a for v5p (required)
  --project PROJECT          Google Cloud project (default: gcloud's configured one)
  --accelerator-type TYPE    e.g. v5litepod-8 (v5e-8, 1 host), v5p-32 (4 hosts); default v5litepod-8
  --version VERSION          TPU runtime image (default: from the accelerator type)
  --repo URL                 git URL of this project (default: \$REFINEDWEB_REPO)
  --workdir DIR              run directory, gs://bucket/run (train)
  --config PATH[:ARG]        experiment config, relative to the repository (train)
  --config.KEY=VALUE         config overrides, passed through (train)
  --detach                   train in the background, logging to ~/refinedweb_train.log
  --dry-run                  print the gcloud commands, one a line, instead of running them"

NAME="" ZONE="" PROJECT="" ACCELERATOR_TYPE="v5litepod-8" VERSION=""
REPO="${REFINEDWEB_REPO:-}" WORKDIR="" CONFIG="" DETACH=0 DRY_RUN=0
OVERRIDES=()
# On each worker; the tilde is expanded there, not here.
# shellcheck disable=SC2088
REMOTE_DIR="~/refinedweb_jax" REMOTE_VENV="~/venv"

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

# Fails unless flag $1 has a value $2.
value() { [[ $# -ge 2 && $2 != --* ]] || die "flag $1 needs a value"; }

parse_flags() {
  while (($#)); do
    case "$1" in
      --config.*=*) OVERRIDES+=("$1") ;;
      --config.*) die "config override '$1' needs a value: $1=VALUE" ;;
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      --name) value "$@"; NAME=$2; shift ;;
      --zone) value "$@"; ZONE=$2; shift ;;
      --project) value "$@"; PROJECT=$2; shift ;;
      --accelerator-type) value "$@"; ACCELERATOR_TYPE=$2; shift ;;
      --version) value "$@"; VERSION=$2; shift ;;
      --repo) value "$@"; REPO=$2; shift ;;
      --workdir) value "$@"; WORKDIR=$2; shift ;;
      --config) value "$@"; CONFIG=$2; shift ;;
      --detach) DETACH=1 ;;
      --dry-run) DRY_RUN=1 ;;
      -h | --help) echo "usage: $(basename "$0") [flags]"; echo "$USAGE"; exit 0 ;;
      *) die "unknown flag '$1'; allowed: --name --zone --project --accelerator-type" \
             "--version --repo --workdir --config --config.KEY=VALUE --detach --dry-run" ;;
    esac
    shift
  done
  [[ -n $NAME ]] || die "--name is required (the TPU VM name)"
  [[ -n $ZONE ]] || die "--zone is required (e.g. us-west4-a)"
  [[ -n $VERSION ]] || VERSION=$(default_version "$ACCELERATOR_TYPE")
}

# The TPU runtime image for an accelerator type (cloud.google.com/tpu/docs/runtimes).
default_version() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "unknown --accelerator-type '$1'; allowed: v5litepod-N, v5p-N, v6e-N, v4-N," \
           "v3-N, v2-N (or give --version)" ;;
  esac
}

# Shell-quotes each argument (single quotes, only where needed; --flag='value') and joins them.
quote() {
  local word flag out=()
  for word in "$@"; do
    flag=""
    if [[ $word =~ ^(--[a-z-]+=)(.*)$ ]]; then
      flag=${BASH_REMATCH[1]} word=${BASH_REMATCH[2]}
    fi
    if [[ ! $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      word="'${word//\'/\'\\\'\'}'"
    fi
    out+=("$flag$word")
  done
  echo "${out[*]}"
}

# Runs a command, or prints it (--dry-run); either way it is echoed.
run() {
  if ((DRY_RUN)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# Dry runs too: a printed command with a made-up repository would not run either.
need_repo() {
  [[ -n $REPO ]] || die "set --repo URL (or REFINEDWEB_REPO) to this project's git URL"
}

need_workdir() {
  [[ -n $WORKDIR ]] || die "--workdir is required (e.g. gs://my-bucket/runs/demo)"
}

gcloud_tpu() {
  local verb=$1
  shift
  run gcloud compute tpus tpu-vm "$verb" "$NAME" "--zone=$ZONE" \
    ${PROJECT:+"--project=$PROJECT"} "$@"
}

# Runs a shell command on every worker of the slice at once.
on_all_workers() { gcloud_tpu ssh --worker=all "--command=$1"; }

create_tpu() {
  gcloud_tpu create "--accelerator-type=$ACCELERATOR_TYPE" "--version=$VERSION"
}

# Clones (or updates) the project on every worker and installs it into a Python 3.11
# venv made by uv (the runtime images ship an older Python), with JAX's TPU backend.
install_project() {
  need_repo
  # shellcheck disable=SC2088
  local uv="~/.local/bin/uv" repo
  repo=$(quote "$REPO")
  on_all_workers "set -e; if [ -d $REMOTE_DIR/.git ];\
 then git -C $REMOTE_DIR pull --quiet --ff-only;\
 else git clone --quiet $repo $REMOTE_DIR; fi;\
 python3 -m pip install --quiet --user --upgrade uv;\
 $uv venv --quiet --allow-existing --python 3.11 $REMOTE_VENV;\
 $uv pip install --quiet --python $REMOTE_VENV/bin/python\
 -r $REMOTE_DIR/requirements.txt \"jax[tpu]\" gcsfs google-cloud-storage;\
 $uv pip install --quiet --python $REMOTE_VENV/bin/python --no-deps -e $REMOTE_DIR"
}

# Starts `refinedweb train` on every worker; on a pod slice the processes find each
# other through the TPU runtime (jax.distributed), so the command is the same everywhere.
start_training() {
  need_workdir
  if [[ $WORKDIR != gs://* ]]; then
    echo "warning: --workdir '$WORKDIR' is on the TPU VM's own disk; on a pod slice every" \
         "host needs the same checkpoints, and a VM's disk goes when it is deleted:" \
         "use gs://" >&2
  fi
  local args=(train --workdir "$WORKDIR")
  [[ -z $CONFIG ]] || args+=(--config "$CONFIG")
  args+=("${OVERRIDES[@]}")
  local train
  train="$REMOTE_VENV/bin/refinedweb $(quote "${args[@]}")"
  if ((DETACH)); then
    train="nohup $train > ~/refinedweb_train.log 2>&1 < /dev/null &"
  fi
  on_all_workers "cd $REMOTE_DIR && $train"
}

delete_tpu() { gcloud_tpu delete; }
