#!/usr/bin/env bash
# GPU readiness in one command: torch-CUDA latency table, TensorRT fp16/int8 tables and engine
# packaging (where TensorRT is installed), 100 GPU training steps and, with two GPUs, the training
# stage as 2 NCCL ranks, on tiny params; prints one
# JSON of what ran, what was skipped and why, with fidelity figures. No network. Exit 0 when
# nothing failed (on a machine without CUDA everything is skipped, still exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 OMP_WAIT_POLICY=PASSIVE ONCEFLOW_LOG_LEVEL=WARNING
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
exec timeout 470 "$PY" scripts/gpu_check.py
