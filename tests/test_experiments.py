"""Comparing runs the way DVC users do, on the real pipeline with tiny params.

One module fixture runs the whole pipeline twice in a fresh project copy and commits each run
(the second with fewer random search samples): `dvc metrics diff`, `dvc plots diff` and
`onceflow report --baseline` compare the two commits. A fresh clone of it (DVC cache pulled
from a local remote, as a teammate's clone would) queues two experiments, runs the queue in
DVC's temp workspaces and reads each experiment's headlines through `dvc exp show --json`.
Bad `-S` overrides end like bad params: the stage's one-line config error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_dvc, tool_env
from tests.support.workspace import TINY_PARAMS, copy_project, deep_merge

pytestmark = pytest.mark.slow(seconds=370)  # test time on CI: the longest start first

ROOT = Path(__file__).resolve().parents[1]
# Every stage imports the onceflow of the workspace it runs in (a queued experiment runs in a
# temp copy under .dvc/tmp/exps/): a path relative to the stage's working directory.
ENV = {"PYTHONPATH": "src", "ONCEFLOW_PROGRESS": "off"}
IDENT = ["-c", "user.name=onceflow tests", "-c", "user.email=tests@onceflow.invalid"]


def dvc(repo: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    return run_dvc(repo, *args, check=check, **{**ENV, **env})


def git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", *IDENT, *args], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def commit_run(repo: Path, message: str, cache: Path) -> None:
    """`dvc repro`, then commit what git tracks: dvc.lock, headline metrics and plot data."""
    dvc(repo, "repro", ONCEFLOW_CACHE_DIR=str(cache))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    assert git(repo, "status", "--porcelain") == ""  # every output is either in git or ignored
    tracked = git(repo, "ls-files", "metrics").split()
    assert "metrics/predictor.json" in tracked and "metrics/predictor.details.json" in tracked


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy with two committed pipeline runs (HEAD~1: 300 random search samples and
    one latency budget; HEAD: 150 samples and a second budget) and a local DVC remote holding
    both runs' outputs and run cache."""
    repo = copy_project(ROOT, tmp_path_factory.mktemp("exp") / "repo", TINY_PARAMS)
    remote = repo.parent / "remote"
    dvc(repo, "remote", "add", "-d", "local", str(remote))
    git(repo, "commit", "-q", "-am", "a local DVC remote")
    cache = repo.parent / "host-cache"  # the module's own (the autouse one is per test)
    commit_run(repo, "run 1", cache)
    params = repo / "params.yaml"
    import yaml

    # A second budget changes the search headline `models` by construction (fewer random
    # samples alone may keep the same best random subnet, and so every headline).
    budgets = {"unit": "fraction", "values": [0.5, 0.8]}
    change = {"search": {"random_samples": 150, "default_budgets": budgets}}
    doc = deep_merge(yaml.safe_load(params.read_text()), change)
    params.write_text(yaml.safe_dump(doc, sort_keys=False))
    commit_run(repo, "run 2: 150 random search samples, a second budget", cache)
    dvc(repo, "push", "--run-cache")
    return repo


def test_metrics_and_plots_diff_between_two_commits(two_runs: Path, tmp_path: Path) -> None:
    repo = two_runs
    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD~1", "--json").stdout)
    # The details are git-tracked metrics too: the search's changed with its samples.
    assert "metrics/search/ort-cpu.details.json" in diff
    # A second budget: each search reports two picks; training did not move.
    changed = {(f, k): v for f, keys in diff.items() for k, v in keys.items() if "details" not in f}
    assert changed and {f for f, _ in changed} <= {
        f"metrics/{s}/{t}.json" for s in ("search", "package") for t in ("ort-cpu", "ort-cpu-int8")
    } | {"metrics/specialization.json", "metrics/publish.json"}
    for target in ("ort-cpu", "ort-cpu-int8"):
        models = changed[(f"metrics/search/{target}.json", "models")]
        assert (models["old"], models["new"]) == (1, 2)
    assert all(v["old"] is not None and v["new"] is not None for v in changed.values())
    same = json.loads(dvc(repo, "metrics", "diff", "HEAD~1", "--all", "--json").stdout)
    assert same["metrics/supernet.json"]["top1"]["diff"] == 0

    out = str(tmp_path / "dvc_plots")
    plots = json.loads(dvc(repo, "plots", "diff", "HEAD~1", "--json", "--split", "-o", out).stdout)
    (search,) = plots["data"]["plots/search/ort-cpu.csv"]
    points = search["anchor_definitions"]["<DVC_METRIC_DATA>"]
    by_rev = {
        r: sum(p["rev"] == r and p["kind"] == "random" for p in points) for r in search["revisions"]
    }
    assert by_rev == {"workspace": 150, "HEAD~1": 300}  # each commit's own points, read from git

    page = tmp_path / "cmp.html"
    res = subprocess.run(
        ["onceflow", "report", "--root", str(repo), "--baseline", "HEAD~1", "--out", str(page)],
        capture_output=True, text=True, env=tool_env(**ENV), cwd=repo,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    cmp = html[html.index('<section id="comparison"') :]
    cmp = cmp[: cmp.index("</section>")]
    assert 'data-status="ok"' in cmp and "<code>HEAD~1</code>" in cmp
    assert re.search(r"<td>val top-1, largest subnet</td>.*?same</td>", cmp)  # one supernet
    for target in ("ort-cpu", "ort-cpu-int8"):  # the new budget's pick has no baseline
        assert f"pick {target} · budget 1 of 2" in cmp and f"pick {target} · budget 2 of 2" in cmp


def _exp_headlines(show: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (commit, {metrics file: headline}) of every experiment in `dvc exp show --json`."""
    out = {}
    for base in show:
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                metrics = (rev.get("data") or {}).get("metrics") or {}
                heads = {f: (m or {}).get("data") for f, m in metrics.items()}
                out[rev.get("name")] = (rev.get("rev"), heads)
    return out


def _workers_alive(repo: Path) -> bool:
    """Whether a queue worker `dvc queue start` spawned still runs (DVC's process records)."""
    for info in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        rec = json.loads(info.read_text())
        try:
            os.kill(int(rec["pid"]), 0)
        except ProcessLookupError:
            continue
        if rec.get("returncode") is None:
            return True
    return False


def _wait_for_queue(repo: Path, timeout_s: float = 900) -> str:
    """Wait until the queue's worker exits (it does when the queue is empty), then read the
    queue's status once. Polling `dvc queue status` instead broadcasts through celery's file
    broker, and the worker can read a message file still being written and die (kombu's
    filesystem transport: JSONDecodeError, "Unrecoverable error"), stranding the queue."""
    end = time.monotonic() + timeout_s
    records = repo / ".dvc/tmp/exps/celery"
    while not any(records.glob("dvc-exp-worker-*.json")) and time.monotonic() < end:
        time.sleep(1)  # `dvc queue start` spawned it; its record follows
    while _workers_alive(repo) and time.monotonic() < end:
        time.sleep(3)
    status = dvc(repo, "queue", "status").stdout
    if re.search(r"\b(Queued|Running)\b", status):
        dvc(repo, "queue", "kill", "--all", check=False)  # pragma: no cover - a hung queue
        logs = "".join(p.read_text() for p in records.glob("*.out"))
        pytest.fail(f"queue not done after its worker stopped:\n{status}\n{logs[-3000:]}")
    return status


def test_queued_experiments_from_a_fresh_clone_record_their_headlines(
    two_runs: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(two_runs), str(clone)], check=True)
    dvc(clone, "pull", "--run-cache")  # what a teammate's clone does first
    sizes = {"small": 14, "large": 20}  # >= 13: 3 folds + 20% held out
    for name, n in sizes.items():
        dvc(clone, "exp", "run", "--queue", "-n", name, "-S", f"predictor.n_samples={n}")
    dvc(clone, "queue", "start", "-j", "1")
    status = _wait_for_queue(clone)
    assert "Failed" not in status, dvc(clone, "queue", "logs", "small", check=False).stdout

    show = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    found = _exp_headlines(show)
    assert set(found) >= set(sizes)
    for name, n in sizes.items():
        commit, heads = found[name]
        # every headline file is in the experiment's commit (no '!' in `dvc exp show`)
        assert heads["metrics/supernet.json"]["top1"] is not None
        assert heads["metrics/predictor.json"]["kendall_tau"] is not None
        assert heads["metrics/search/ort-cpu.json"]["top1"] is not None
        assert heads["metrics/package/ort-cpu-int8.json"]["models"] == 1
        # its own predictor, measured with its own params (details: in the experiment's commit)
        details = json.loads(git(clone, "show", f"{commit}:metrics/predictor.details.json"))
        assert details["n_samples"] == n
        assert "metrics/predictor.details.json" in heads  # a metric (keeps the run cache)
    # the supernet was restored from the run cache, not retrained per experiment
    for f in ("metrics/supernet.json", "metrics/supernet.details.json"):  # train_seconds too
        assert found["small"][1][f] == found["large"][1][f]

    # `onceflow exps`: the sweep side by side, narrow, headlines only
    res = subprocess.run(
        ["onceflow", "exps"], capture_output=True, text=True, env=tool_env(**ENV), cwd=clone
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(map(len, lines)) <= 100, res.stdout
    assert set(lines[0].split()) >= set(sizes)  # a column per experiment (and the commit)
    table = res.stdout
    assert "params\n  predictor.n_samples" in table and "predictor\n  kendall_tau" in table
    assert "details" not in table

    dvc(clone, "exp", "apply", "large")
    applied = json.loads((clone / "metrics/predictor.details.json").read_text())
    assert applied["n_samples"] == 20
    assert len((clone / "data/predictor/arch_acc.csv").read_text().splitlines()) == 1 + 20


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=many", "params.yaml: train.batch_size:"),
        ("train.batch_size=0", "params.yaml: train.batch_size:"),
        ("+train.bacth_size=64", "params.yaml: train.bacth_size: unknown key"),
    ],
)
def test_a_bad_override_fails_like_bad_params(two_runs: Path, override: str, message: str) -> None:
    res = dvc(two_runs, "exp", "run", "--temp", "-S", override, check=False)
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if message in ln]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert git(two_runs, "status", "--porcelain") == ""  # the workspace is untouched


def test_an_override_of_an_unlisted_key_is_refused_by_dvc_as_the_readme_says(
    two_runs: Path,
) -> None:
    res = dvc(two_runs, "exp", "run", "--temp", "-S", "train.bacth_size=64", check=False)
    assert res.returncode != 0 and "is not in struct" in res.stderr
    readme = (ROOT / "README.md").read_text()
    assert "is not in struct" in readme and "+train.bacth_size=64" in readme
