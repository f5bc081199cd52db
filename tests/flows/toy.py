"""A miniature DVC pipeline with the real pipeline's shape, for flow tests and benchmarks.

Same stage names and phases as ``dvc.yaml`` (prepare -> train_supernet -> predictor, per target
``latency_table@T -> search@T -> package@T``, then ``publish``), but each stage is a few lines of
Python that runs in milliseconds. Each run appends ``<stage> <worker>`` to the file named by
``$TOY_RUNLOG`` (when set), so a test can tell which stages ran and where (``$TOY_WORKER``).
``$TOY_FAIL_STAGE=<stage name>[:<exit code>]`` makes that stage exit (default 1) with a message
on stderr; ``$TOY_KILL_ONCE=<stage name>`` kills it (SIGKILL) the first time it runs. Like
``onceflow.stage.run``, each stage records its outcome where ``$ONCEFLOW_STAGE_OUTCOME`` says.

The repo is a git repo with everything committed (flows run a revision, not the working tree).
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
import json, os, signal, sys, pathlib, yaml
stage, key = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
name = f"{stage}@{key}" if key else stage
p = yaml.safe_load(open("params.yaml"))
worker = os.environ.get("TOY_WORKER", "main")
def record(event, code=None, error=""):
    if os.environ.get("ONCEFLOW_STAGE_OUTCOME"):
        with open(os.environ["ONCEFLOW_STAGE_OUTCOME"], "a") as fh:
            fh.write(json.dumps({"stage": os.environ.get("DVC_STAGE", name), "event": event,
                                 "exit_code": code, "error": error}) + "\n")
record("start")
if os.environ.get("TOY_RUNLOG"):
    with open(os.environ["TOY_RUNLOG"], "a") as fh:
        fh.write(f"{name} {worker}\n")
fail, _, code = os.environ.get("TOY_FAIL_STAGE", "").partition(":")
if fail == name:
    msg = f"ERROR toy: {name} cannot meet its latency budget (toy failure)"
    sys.stderr.write(msg + "\n")
    record("end", int(code or 1), msg)
    sys.exit(int(code or 1))
if os.environ.get("TOY_KILL_ONCE") == name and os.environ.get("TOY_RUNLOG"):
    marker = pathlib.Path(os.environ["TOY_RUNLOG"] + ".killed")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
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
    out("metrics/supernet.json", {"val_acc_max": 0.9, "val_acc_mid": 0.85, "val_acc_min": 0.8,
                                  "epochs": p["train"]["epochs"]})
elif stage == "predictor":
    out("models/predictor/m.json", {"epochs": p["train"]["epochs"]})
elif stage == "latency_table":
    out(f"latency/{key}/lut.json", {"target": key, "worker": worker})
elif stage == "search":
    out(f"search/{key}/selected.json", {"target": key, "worker": worker})
    pathlib.Path(f"plots/search").mkdir(parents=True, exist_ok=True)
    pathlib.Path(f"plots/search/{key}.png").write_bytes(PNG)
elif stage == "package":
    model = {"model_id": f"toy-{key}-0", "test_accuracy": 0.9, "predicted_accuracy": 0.91,
             "latency_ms": 1.5, "predicted_latency_ms": 1.4, "budget_ms": 2.0}
    out(f"artifacts/{key}/toy-{key}-0/manifest.json", {**model, "target": key, "worker": worker})
    out(f"metrics/package/{key}.json", {"target": key, "n_packages": 1, "packages": [model]})
elif stage == "publish":
    models = []
    for f in sorted(pathlib.Path("artifacts").glob("*/*/manifest.json")):
        m = json.loads(f.read_text())
        models.append({"target": m["target"], "model_id": m["model_id"], "status": "published"})
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
                "metrics": [{"metrics/supernet.json": nocache}],
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
    """Create a git + DVC repo at ``root`` holding the toy pipeline, committed; return its path."""
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
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=root, env=env, check=True)
    subprocess.run([*dvc, "config", "core.analytics", "false"], cwd=root, env=env, check=True)
    commit(root, "toy pipeline")
    return root


def commit(root: str | os.PathLike[str], message: str) -> None:
    """``git add -A && git commit`` in ``root`` (a test repo), with a fixed identity."""
    ident = ["-c", "user.name=onceflow tests", "-c", "user.email=tests@onceflow.invalid"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *ident, "commit", "-q", "-m", message], cwd=root, check=True)
