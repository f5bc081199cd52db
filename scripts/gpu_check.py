"""GPU readiness in one command: the CUDA paths on tiny params, one JSON of what ran and why not.

Checks (each independent; a failure is reported, not raised):
- ``torch_cuda_table``: a latency table on the torch CUDA backend (CUDA events), with its
  fidelity figures (estimator vs held-out subnets).
- ``tensorrt_fp16_table`` / ``tensorrt_int8_table``: the same on TensorRT (int8 calibrated on
  images through onceflow.latency.calibration_data), where the tensorrt package is installed.
- ``tensorrt_package``: a packaged subnet with its serialized engine (``model.plan``).
- ``gpu_training``: 100 steps of sandwich training of the tiny supernet on the GPU.
- ``nccl_two_ranks``: the train_supernet stage as 2 local ranks over NCCL, one per GPU (the GPU
  profile's layout; torch's elastic launcher), where two GPUs are visible: both ranks end with
  equal parameters and the stage writes its outputs.
On a machine without CUDA every check is skipped with the reason, and the exit code is 0.
Needs no network and no prepared data (synthetic images). Usage: bash scripts/gpu_check.sh
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKS = (
    "torch_cuda_table",
    "tensorrt_fp16_table",
    "tensorrt_int8_table",
    "tensorrt_package",
    "gpu_training",
    "nccl_two_ranks",
)
TRAIN_STEPS = 100
# TensorRT builds one engine per LUT entry and subnet (~1-3 s each): a smaller space and fewer
# subnets keep the two TensorRT tables within the 8-minute budget.
TRT_SPACE = {"kernels": [3], "widths": [1.0]}
TRT_SUBNETS = {"calibration_subnets": 4, "validation_subnets": 6}


def synthetic_prepared(directory: Path, n_per_class: int = 40) -> Path:
    """Learnable 28x28 grayscale images (each class lights its own patch), prepared layout."""
    from onceflow.data.prepared import Meta, Split, save_split

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, k in (("train", n_per_class), ("val", n_per_class // 4), ("test", n_per_class // 4)):
        labels = np.repeat(np.arange(10), k)
        x = rng.integers(0, 60, size=(len(labels), 28, 28, 1))
        for c in range(10):
            r, q = divmod(c, 4)
            x[labels == c, r * 7 + 1 : r * 7 + 6, q * 7 + 1 : q * 7 + 6] += 180
        perm = rng.permutation(len(labels))
        save_split(directory, name, Split(np.clip(x, 0, 255).astype(np.uint8)[perm], labels[perm]))
        counts[name] = len(labels)
    meta = Meta(
        classes=tuple(f"class{c}" for c in range(10)), height=28, width=28, channels=1,
        mean=(0.2,), std=(0.3,), source="synthetic", counts=counts,
    )  # fmt: skip
    (directory / "meta.json").write_text(json.dumps(meta.to_json()))
    return directory


def tiny_params(targets: dict[str, Any], small: bool = False) -> Any:
    from onceflow.config import parse_params

    # The tests' tiny space (one copy): this script runs from a checkout, next to tests/.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.workspace import TINY_PARAMS

    return parse_params(
        {
            "base": {"threads": 2, "device": "cuda"},
            "supernet": TINY_PARAMS["supernet"] | (TRT_SPACE if small else {}),
            "latency": {
                "targets": targets,
                "protocol": {"warmup": 5, "repeats": 30, "sessions": 1},
                "calibration_subnets": 8,
                "validation_subnets": 12,
            }
            | (TRT_SUBNETS if small else {}),
            "train": {**TINY_PARAMS["train"], "processes": 1, "epoch_eval_images": 0},
            "package": {"bn_calibration_images": 64, "batch_size": 64, "max_models": 1},
        }
    )


def table_check(
    name: str, target: dict[str, Any], data_dir: Path, small: bool = False
) -> dict[str, Any]:
    from onceflow.data.prepared import load_prepared
    from onceflow.latency import build_latency_table, make_backend
    from onceflow.latency.calibration_data import calibration_images
    from onceflow.supernet import SearchSpace, Supernet, build_layer

    params = tiny_params({name: target}, small)
    data = load_prepared(data_dir)
    space = SearchSpace(params.supernet, 1, 10, 28)
    t = params.latency.targets[name]
    dev = t.device
    net = Supernet(space).eval().to(dev)
    images = (
        calibration_images(data, t.options.int8_calibration_images)
        if t.precision == "int8"
        else None
    )
    backend = make_backend(t, images)
    res = build_latency_table(
        space, lambda s: build_layer(s).to(dev), net.extract, backend, params.latency, name
    )
    m = res.metrics
    keys = ("kendall_tau", "spearman", "mape", "within_10pct", "noise_cv", "lut_entries")
    return {k: m[k] for k in keys} | {"measured_ms_range": m["measured_ms_range"]}


def package_check(data_dir: Path) -> dict[str, Any]:
    from onceflow.data.prepared import load_prepared
    from onceflow.package.pipeline import package_target
    from onceflow.supernet import SearchSpace, Supernet

    target = {"backend": "tensorrt", "device": "cuda", "precision": "fp16"}
    params = tiny_params({"trt-fp16": target}, small=True)
    data = load_prepared(data_dir)
    space = SearchSpace(params.supernet, 1, 10, 28)
    net = Supernet(space).eval()
    arch = space.min_arch()
    sel = {"selected": [{"arch_json": arch.to_json(), "budget_ms": 1.0}]}
    with tempfile.TemporaryDirectory() as out:
        [res] = package_target(
            net, sel, data, target_name="trt-fp16", params=params, lineage={},
            content_hashes={"data": "synthetic"}, out_root=Path(out), created_at="gpu_check",
        )  # fmt: skip
        plan = (res.path / "model.plan").stat().st_size if (res.path / "model.plan").exists() else 0
    return {"engine": res.engine, "plan_bytes": plan, "latency_ms": res.latency_ms,
            "parity_max_abs_diff": res.parity.max_abs_diff}  # fmt: skip


def training_check(
    data_dir: Path, device: str = "cuda", steps: int = TRAIN_STEPS
) -> dict[str, Any]:
    from onceflow.data.prepared import load_prepared
    from onceflow.supernet import SearchSpace
    from onceflow.train.loop import train_supernet

    params = tiny_params({"x": {}})
    data = load_prepared(data_dir, mmap=False)
    space = SearchSpace(params.supernet, 1, 10, 28)
    cfg = params.train.model_copy(update={"batch_size": 32})
    phases = [p.model_copy(update={"epochs": 1000}) for p in cfg.phases]  # should_stop ends it
    cfg = cfg.model_copy(update={"phases": phases})
    t0 = time.perf_counter()
    out = train_supernet(
        data, space, cfg, device=device, should_stop=lambda g: g >= steps, progress=False
    )
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    on = {p.device.type for p in out.model.parameters()}
    if on != {torch.device(device).type}:
        raise RuntimeError(f"trained weights live on {on}, not {device}")
    last = out.history[-1]["train_loss_max"] if out.history else None
    return {"steps": steps, "seconds": round(seconds, 2),
            "steps_per_s": round(steps / seconds, 2), "last_epoch_loss_max": last}  # fmt: skip


def nccl_check(data_dir: Path) -> dict[str, Any]:
    """The real stage, 2 ranks x 1 GPU each over NCCL, in a subprocess (it launches its ranks)."""
    import os
    import subprocess

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.workspace import TINY_PARAMS

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        params = {"base": {"threads": 2, "device": "cuda"}, "supernet": TINY_PARAMS["supernet"],
                  "train": {**TINY_PARAMS["train"], "processes": 2, "ddp_backend": "nccl",
                            "epoch_eval_images": 0}}  # fmt: skip
        (out / "params.yaml").write_text(yaml.safe_dump(params))
        argv = ["--params", str(out / "params.yaml"), "--data", str(data_dir),
                "--out", str(out / "supernet"), "--metrics", str(out / "m.json"),
                "--details", str(out / "d.json"), "--live", str(out / "live"),
                "--checkpoints", str(out / "ckpt")]  # fmt: skip
        env = dict(os.environ, ONCEFLOW_LOG_LEVEL="INFO")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "stages.train_supernet", *argv], cwd=root,
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr[-600:]}")
        synced = proc.stderr.count("parameters in sync across 2 ranks")
        if synced != 2 or "(nccl)" not in proc.stderr:
            raise RuntimeError(f"ranks not checked in sync over nccl: {proc.stderr[-600:]}")
        details = json.loads((out / "d.json").read_text())
    return {
        "ranks": 2,
        "backend": "nccl",
        "stage_s": round(time.perf_counter() - t0, 1),
        "val_acc_max": details["val_acc_max"],
        "train_seconds": details["train_seconds"],
    }


def run_checks() -> dict[str, Any]:
    report: dict[str, Any] = {"cuda": torch.cuda.is_available(), "ran": {}, "skipped": {},
                              "failed": {}}  # fmt: skip
    if not torch.cuda.is_available():
        why = "no CUDA device: torch.cuda.is_available() is False"
        report["skipped"] = {c: why for c in CHECKS}
        return report
    report["device"] = torch.cuda.get_device_name()
    report["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    has_trt = importlib.util.find_spec("tensorrt") is not None
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = synthetic_prepared(Path(tmp) / "prepared")
        cache = str(Path(tmp) / "engines")
        trt = {"backend": "tensorrt", "device": "cuda", "options": {"engine_cache_dir": cache}}
        todo: dict[str, Callable[[], dict[str, Any]] | str] = {
            "torch_cuda_table": lambda: table_check(
                "torch-cuda", {"backend": "torch", "device": "cuda"}, data_dir
            ),
            "tensorrt_fp16_table": (
                lambda: table_check("trt-fp16", trt | {"precision": "fp16"}, data_dir, True)
            )
            if has_trt
            else "the tensorrt Python package is not installed",
            "tensorrt_int8_table": (
                lambda: table_check("trt-int8", trt | {"precision": "int8"}, data_dir, True)
            )
            if has_trt
            else "the tensorrt Python package is not installed",
            "tensorrt_package": (lambda: package_check(data_dir))
            if has_trt
            else "the tensorrt Python package is not installed",
            "gpu_training": lambda: training_check(data_dir),
            "nccl_two_ranks": (lambda: nccl_check(data_dir))
            if torch.cuda.device_count() >= 2
            else f"needs 2 GPUs (one rank each); {torch.cuda.device_count()} visible",
        }
        for name, fn in todo.items():
            if isinstance(fn, str):
                report["skipped"][name] = fn
                continue
            t0 = time.perf_counter()
            try:
                report["ran"][name] = fn() | {"wall_s": round(time.perf_counter() - t0, 1)}
            except Exception as err:  # report every failure; the JSON is the product
                report["failed"][name] = f"{type(err).__name__}: {err}"
                logging.getLogger("gpu_check").debug(traceback.format_exc())
    return report


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    t0 = time.perf_counter()
    report = run_checks()
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
