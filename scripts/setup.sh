#!/usr/bin/env bash
# Idempotent set-up for `make run` / `make test`: a virtual environment in .venv with the
# project installed from the committed constraints, and the Fashion-MNIST files.
# A second call only checks stamps and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP=.venv/.onceflow-installed
FMNIST_DIR=/usr/share/datasets/fashion-mnist

need_install() {
  [[ ! -x .venv/bin/python || ! -f $STAMP ]] && return 0
  [[ pyproject.toml -nt $STAMP || constraints.txt -nt $STAMP ]] && return 0
  return 1
}

if need_install; then
  echo "setup: creating .venv and installing onceflow (first run: a few minutes)" >&2
  "$PYTHON" - <<'PY' || { echo "setup: onceflow needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # Constraints pin every transitive version; torch==2.13.0 resolves to the CPU wheel on disk.
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  touch "$STAMP"
fi

if [[ ! -f $FMNIST_DIR/train-images-idx3-ubyte.gz ]]; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [[ $(id -u) -eq 0 ]] || [[ -n $SUDO ]]; }; then
    echo "setup: installing Debian's dataset-fashion-mnist" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    cat >&2 <<MSG
setup: Fashion-MNIST is missing from $FMNIST_DIR and apt-get is not usable here.
  Install Debian's package:  apt-get install dataset-fashion-mnist
  or download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz
  and t10k-labels-idx1-ubyte.gz from the official Fashion-MNIST repository
  (github.com/zalandoresearch/fashion-mnist, data/fashion/) into a directory and set
  data.path in params.yaml to it.
MSG
    exit 1
  fi
fi

# The library versions the stages depend on (DVC params of environment.yaml): rewritten only
# when one changed, so an upgrade reruns exactly the stages that use that library.
.venv/bin/onceflow env --write --root . >/dev/null
