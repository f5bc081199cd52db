"""A miniature DVC pipeline with the real pipeline's shape, for flow tests and benchmarks.

Same stage names and phases as ``dvc.yaml`` (prepare -> train_supernet -> predictor, per target
``latency_table@T -> search@T -> package@T``, then ``publish``), but each stage is a few lines of
Python that runs in milliseconds. Each run appends ``<stage> <worker>`` to the file named by
``$TOY_RUNLOG`` (when set), so a test can tell which stages ran and where (``$TOY_WORKER``).
``$TOY_FAIL_STAGE=<stage name>`` makes that stage exit 1 with a message on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_SCRIPT = r"""
import json, os, sys, pathlib, yaml
stage, key = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
name = f"{stage}@{key}" if key else stage
p = yaml.safe_load(open("params.yaml"))
worker = os.environ.get("TOY_WORKER", "main")
if os.environ.get("TOY_RUNLOG"):
    with open(os.environ["TOY_RUNLOG"], "a") as fh:
        fh.write(f"{name} {worker}\n")
if os.environ.get("TOY_FAIL_STAGE") == name:
    sys.stderr.write(f"ERROR toy: {name} cannot meet its latency budget (toy failure)\n")
    sys.exit(1)
def out(path, obj):
    path = pathlib.Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True))
# a 1x1 PNG stands in for a Pareto plot
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cfc0f01f0005ff02fe1b8b3c2b"
                    "0000000049454e44ae426082")
if stage == "prepare":
    out("data/prepared/meta.json", {"seed": p["base"]["seed"]})
elif stage == "train_supernet":
    out("models/supernet/w.json", {"epochs": p["train"]["epochs"]})
elif stage == "predictor":
    out("models/predictor/m.json", {"epochs": p["train"]["epochs"]})
elif stage == "latency_table":
    out(f"latency/{key}/lut.json", {"target": key, "worker": worker})
elif stage == "search":
    out(f"search/{key}/selected.json", {"target": key, "worker": worker})
    pathlib.Path(f"plots/search").mkdir(parents=True, exist_ok=True)
    pathlib.Path(f"plots/search/{key}.png").write_bytes(PNG)
elif stage == "package":
    model = {"target": key, "model_id": f"toy-{key}-0", "test_accuracy": 0.9,
             "latency_ms": {"measured": 1.5}, "worker": worker}
    out(f"artifacts/{key}/toy-{key}-0/manifest.json", model)
    out(f"metrics/package/{key}.json", {"models": [model]})
elif stage == "publish":
    models = []
    for f in sorted(pathlib.Path("artifacts").glob("*/*/manifest.json")):
        m = json.loads(f.read_text())
        models.append({"target": m["target"], "model_id": m["model_id"]})
    out("metrics/publish.json", {"registry": "file://registry", "packages": models})
"""


TP = "latency.targets.${key}"  # a target's stages depend on its own config only


def _per_target(name: str, deps: list[str], outs: list[Any], **extra: Any) -> dict:
    do = {"cmd": f"python toy_stage.py {name} ${{key}}", "deps": deps, "params": [TP]}
    return {"foreach": "${latency.targets}", "do": {**do, "outs": outs, **extra}}


def dvc_yaml() -> dict:
    """The toy dvc.yaml: the real stage names and dependency shape."""
    nocache = {"cache": False}
    return {
        "stages": {
            "prepare": {
                "cmd": "python toy_stage.py prepare",
                "deps": ["toy_stage.py"],
                "params": ["base"],
                "outs": ["data/prepared"],
            },
            "train_supernet": {
                "cmd": "python toy_stage.py train_supernet",
                "deps": ["toy_stage.py", "data/prepared"],
                "params": ["train"],
                "outs": ["models/supernet"],
            },
            "predictor": {
                "cmd": "python toy_stage.py predictor",
                "deps": ["toy_stage.py", "models/supernet"],
                "params": ["train"],
                "outs": ["models/predictor"],
            },
            "latency_table": _per_target(
                "latency_table", ["toy_stage.py", "models/supernet"], ["latency/${key}"]
            ),
            "search": _per_target(
                "search",
                ["toy_stage.py", "models/predictor", "latency/${key}"],
                ["search/${key}"],
                plots=[{"plots/search/${key}.png": nocache}],
            ),
            "package": _per_target(
                "package",
                ["toy_stage.py", "search/${key}"],
                ["artifacts/${key}"],
                metrics=[{"metrics/package/${key}.json": nocache}],
            ),
            "publish": {
                "cmd": "python toy_stage.py publish",
                "deps": ["toy_stage.py", "artifacts"],
                "metrics": [{"metrics/publish.json": nocache}],
            },
        }
    }


def write_toy_repo(root: str | os.PathLike[str], targets: Mapping[str, Mapping[str, Any]]) -> Path:
    """Create a DVC repo (no git) at ``root`` holding the toy pipeline; return its path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy_stage.py").write_text(_SCRIPT, encoding="utf-8")
    params = {
        "base": {"seed": 0},
        "train": {"epochs": 1},
        "latency": {"targets": {k: dict(v) for k, v in targets.items()}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(), sort_keys=False), encoding="utf-8")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q", "--no-scm"], cwd=root, env=env, check=True)
    subprocess.run([*dvc, "config", "core.analytics", "false"], cwd=root, env=env, check=True)
    return root
