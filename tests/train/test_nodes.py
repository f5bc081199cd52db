"""Training across machines on torch's elastic launcher, two "nodes" on 127.0.0.1 (separate
process groups and working directories, one c10d rendezvous): the same weights as one node with
two ranks, a lost node survived by resuming from a checkpoint, a mismatched node refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from onceflow.cli import app
from onceflow.config import load_params, parse_params
from onceflow.supernet import load_supernet
from onceflow.train.checkpoint import load_latest_checkpoint
from onceflow.train.distributed import logical_order
from onceflow.train.nodes import refusal
from tests.conftest import REPO_ROOT, tool_env
from tests.train.test_stage import TINY_PARAMS, _argv

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process groups of nodes"
)
ONCEFLOW = Path(sys.executable).with_name("onceflow")


def _params(**train) -> dict:
    return {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], **train}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_dir(root: Path, params: dict, prepared: Path) -> Path:
    """A machine's working directory: its own params.yaml and copy of the prepared data."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(prepared, root / "prepared")
    return root


def _env(port: int) -> dict[str, str]:
    env = tool_env(OMP_NUM_THREADS="1", ONCEFLOW_LOG_LEVEL="INFO",
                   ONCEFLOW_RDZV_ENDPOINT=f"127.0.0.1:{port}")  # fmt: skip
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + str(REPO_ROOT)
    return env


def _popen(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    # Its own session: the node's launcher and ranks are one process group, as on a machine.
    with open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # fmt: skip


def _first_node(node: Path, port: int) -> subprocess.Popen:
    argv = _argv(node, node / "params.yaml", node / "prepared")
    return _popen([sys.executable, "-m", "stages.train_supernet", *argv], node, _env(port))


def _join(node: Path, port: int) -> subprocess.Popen:
    cmd = [str(ONCEFLOW), "train", "join", "--endpoint", f"127.0.0.1:{port}", "--data", "prepared"]
    return _popen(cmd, node, _env(port))


def _log(node: Path) -> str:
    return (node / "stderr.txt").read_text()


def _wait(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return load_supernet(root / "models/supernet").state_dict()


def test_logical_rank_order_puts_the_first_node_first():
    # (first node? 0 : 1, node's rendezvous rank, local rank, torch rank): torch ranked the
    # joined node's ranks first; onceflow's rank 0 is the first node's local rank 0.
    rows = [(1, 0, 0, 0), (1, 0, 1, 1), (0, 1, 0, 2), (0, 1, 1, 3)]
    assert logical_order(rows) == [2, 3, 0, 1]
    assert logical_order([(1, 0, 0, 0), (1, 0, 1, 1)]) == [0, 1]  # plain torchrun


def test_refusal_names_each_differing_digest():
    first = {"code": "c1", "params": "p1", "data": "d1"}
    assert refusal("h:1", dict(first), first) is None
    why = refusal("h:1", {**first, "params": "p2", "data": "d2"}, first)
    assert why is not None and "\n" not in why
    assert "params digest p2 (first node: p1)" in why and "data digest d2" in why
    assert "code digest" not in why


def test_nodes_param_accepts_a_count_or_a_range(tmp_path):
    assert parse_params({"train": {"nodes": 3}}).train.node_range == (3, 3)
    assert parse_params({"train": {"nodes": "1:4"}}).train.node_range == (1, 4)
    # unquoted, YAML 1.1 would read 1:4 as the base-60 integer 64; DVC (YAML 1.2) and
    # onceflow read the range
    (tmp_path / "params.yaml").write_text("train:\n  nodes: 1:4\n  batch_size: 64\n")
    assert load_params(tmp_path / "params.yaml").train.node_range == (1, 4)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--endpoint", "nohost"], "--endpoint: 'nohost' is not HOST:PORT"),
        (["--endpoint", "127.0.0.1:9", "--params", "missing.yaml"], "params file not found"),
        (["--endpoint", "127.0.0.1:9", "--data", "nodata"], "nodata"),
    ],
)
def test_join_refuses_bad_input_with_one_line(args, word, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS))
    res = CliRunner().invoke(app, ["train", "join", *args])
    assert res.exit_code == 2, (res.stderr, res.exception)
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert word in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.slow(seconds=62)  # about the module's test time on CI
def test_two_nodes_train_the_weights_of_one_node_with_two_ranks(tmp_path, tiny_prepared):
    """2 nodes x 1 rank (one rendezvous, separate working directories) and 1 node x 2 ranks:
    the same global batch, seeds and data give bit-identical weights on CPU with gloo (two
    ranks' gradients sum the same in either order; onceflow's rank order gives the first
    node's rank the shard, augmentation and BN statistics of local rank 0)."""
    phases = [{"name": "all", "epochs": 1, "lr": 0.1}]
    port = _free_port()
    a = _node_dir(tmp_path / "a", _params(nodes=2, processes=1, phases=phases), tiny_prepared)
    b = _node_dir(tmp_path / "b", _params(nodes=2, processes=1, phases=phases), tiny_prepared)
    one = _node_dir(tmp_path / "one", _params(processes=2, phases=phases), tiny_prepared)
    procs = [_first_node(a, port), _join(b, port), _first_node(one, _free_port())]
    _wait(procs)
    for p, node in zip(procs, (a, b, one), strict=True):
        assert p.returncode == 0, _log(node)[-3000:]
    assert "rank 1/2 joined (gloo)" in _log(b)
    assert not (b / "models").exists() and not (b / "ckpt").exists()  # only the first node writes
    wa, wo = _weights(a), _weights(one)
    assert wa.keys() == wo.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wo[k])]
    assert not differ, differ[:5]
    ma = json.loads((a / "metrics/supernet.details.json").read_text())
    mo = json.loads((one / "metrics/supernet.details.json").read_text())
    assert ma["val_acc_max"] == mo["val_acc_max"]


@pytest.mark.slow
def test_a_node_lost_mid_run_resumes_from_a_checkpoint(tmp_path, tiny_prepared):
    """An elastic job (nodes 1:2, max_restarts 2): node b is killed (its whole process group,
    SIGKILL) once a checkpoint of both nodes exists; the first node's agent restarts its rank,
    which meets again alone and resumes from that checkpoint, and the stage completes."""
    train = {
        "nodes": "1:2",
        "processes": 1,
        "max_restarts": 2,
        "rdzv_last_call_s": 1,
        "checkpoint_every_steps": 2,
        "phases": [{"name": "all", "epochs": 4, "lr": 0.1}],
    }
    port = _free_port()
    a = _node_dir(tmp_path / "a", _params(**train), tiny_prepared)
    b = _node_dir(tmp_path / "b", _params(**train), tiny_prepared)
    t0 = time.monotonic()
    first, joined = _first_node(a, port), _join(b, port)
    timeline: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and first.poll() is None:
            runs = sorted((a / "ckpt").glob("*/")) if (a / "ckpt").is_dir() else []
            found = next(  # one folder per run identity (train/resume.py identity_dir)
                (f for f in map(load_latest_checkpoint, runs) if f is not None), None
            )
            if found is not None and found[0].get("world") == 2:
                timeline["checkpoint_of_two_nodes_step"] = found[0]["global_step"]
                break
            time.sleep(0.2)
        assert "checkpoint_of_two_nodes_step" in timeline, _log(a)[-3000:] + _log(b)[-2000:]
        timeline["killed_b_s"] = round(time.monotonic() - t0, 1)
        os.killpg(joined.pid, signal.SIGKILL)
        joined.wait()
        first.wait(timeout=180)
    finally:
        _wait([first, joined])
    timeline["completed_s"] = round(time.monotonic() - t0, 1)
    log = _log(a)
    assert first.returncode == 0, log[-4000:]
    resumed = [line for line in log.splitlines() if "elastic restart: step" in line]
    assert resumed, log[-4000:]
    step = int(resumed[-1].split("elastic restart: step ")[1].split()[0])
    assert step >= timeline["checkpoint_of_two_nodes_step"] > 0
    assert "going on with 1" in resumed[-1]
    metrics = json.loads((a / "metrics/supernet.details.json").read_text())
    assert metrics["epochs"] == 4.0
    print("restart timeline:", json.dumps(timeline | {"resumed_at_step": step}))


@pytest.mark.slow
def test_a_node_with_other_params_is_refused_and_missing_nodes_time_out(tmp_path, tiny_prepared):
    port = _free_port()
    train = {"nodes": 2, "processes": 1, "rdzv_timeout_s": 12}
    a = _node_dir(tmp_path / "a", _params(**train), tiny_prepared)
    other = {**_params(**train), "base": {**TINY_PARAMS["base"], "seed": 1}}
    b = _node_dir(tmp_path / "b", other, tiny_prepared)
    first = _first_node(a, port)
    try:
        joined = _join(b, port)
        joined.wait(timeout=120)
        first.wait(timeout=120)
    finally:
        _wait([first])
    err = _log(b)
    assert joined.returncode == 2, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refused to join the job at "), err
    assert "params digest" in lines[0] and "code digest" not in lines[0]
    # nobody else came: the first node gives up with one line naming the endpoint and count
    log = _log(a)
    assert first.returncode == 1, log[-3000:]
    assert f"rendezvous at 127.0.0.1:{port} timed out" in log, log[-3000:]
    assert "1 node(s) came, the job needs 2" in log
    assert "Traceback" not in log
    assert not (a / "models").exists() and not (a / "metrics").exists()
