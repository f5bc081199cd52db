"""An imported target in `dvc status`: its device timings reach its own stages only.

As tests/test_dvc_isolation.py does: the real dvc.yaml and params.yaml in a temp repo, every out
a placeholder, `dvc commit -f` records a lock without running anything; then the real
`device_results@A` stage runs (it is cheap) to show a new device file leaves A's table clean.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from onceflow.devices import NO_TRANSFER
from tests.conftest import REPO_ROOT, run_dvc
from tests.test_dvc_isolation import (
    CROSS_TARGET,
    _changed,
    _edit_params,
    _placeholder_outs,
    placeholder_repo,
)

pytestmark = pytest.mark.slow(seconds=34)  # about the module's test time on CI

A = "ort-cpu"
PHONE = "phone"
# the default targets (all attached): each has its cheap device_results pass-through stage
DEFAULTS = tuple(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["latency"]["targets"])


def _of(target: str) -> set[str]:
    return {f"{s}@{target}" for s in ("device_results", "latency_table", "search", "package")}


def test_an_imported_target_and_its_results_file_stay_isolated(tmp_path: Path) -> None:
    repo = placeholder_repo(tmp_path)
    for f in (repo / "device_results").iterdir():  # what the stage writes for attached targets
        f.write_text(NO_TRANSFER if f.name.endswith(".lut.json") else "arch,latency_ms\n")
    run_dvc(repo, "commit", "-f")
    assert _changed(repo) == set()

    # declare the phone, then import its timings (the file `onceflow latency import` writes)
    def add_phone(p: dict) -> None:
        p["latency"]["targets"][PHONE] = {
            "backend": "onnxruntime",  # what its packages ship (dvc.yaml reads every backend)
            "timings": "imported",
            "estimator": "measured",
            "results": f"devices/{PHONE}.csv",
        }

    _edit_params(repo, add_phone)
    (repo / "devices" / f"{PHONE}.csv").write_text("arch,latency_ms\nr28-x,1.0\n")
    changed = _changed(repo) - CROSS_TARGET
    # the shared devices/ folder changed: A's cheap pass-through stage is due, nothing else of A
    assert A in DEFAULTS and changed == _of(PHONE) | {f"device_results@{t}" for t in DEFAULTS}
    # ...and rerunning it gives A the same header-only file: A's table stays clean
    run_dvc(repo, "repro", "--single-item", *(f"device_results@{t}" for t in DEFAULTS))
    assert (repo / "device_results" / f"{A}.csv").read_text() == "arch,latency_ms\n"
    assert not _changed(repo) & {f"latency_table@{A}", f"search@{A}", f"package@{A}"}
    run_dvc(repo, "repro", "--single-item", f"device_results@{PHONE}")
    assert "r28-x" in (repo / "device_results" / f"{PHONE}.csv").read_text()
    _placeholder_outs(repo)
    run_dvc(repo, "commit", "-f")
    assert _changed(repo) == set()

    # new timings of the phone: its table (and what follows) reruns; A's does not
    (repo / "devices" / f"{PHONE}.csv").write_text("arch,latency_ms\nr28-y,2.0\n")
    every = (*DEFAULTS, PHONE)
    run_dvc(repo, "repro", "--single-item", *(f"device_results@{t}" for t in every))
    # (search@phone and package@phone follow once latency/phone changes)
    assert _changed(repo) - CROSS_TARGET == {f"latency_table@{PHONE}"}
    _placeholder_outs(repo)
    run_dvc(repo, "commit", "-f")

    # a LUT transferred to the phone (`import --transfer-from`): again only the phone's table
    lut = '{"transfer_from": "ort-cpu", "lut_sha256": "0", "lut": {}}\n'
    (repo / "devices" / f"{PHONE}.lut.json").write_text(lut)
    run_dvc(repo, "repro", "--single-item", *(f"device_results@{t}" for t in every))
    assert (repo / "device_results" / f"{PHONE}.lut.json").read_text() == lut
    assert (repo / "device_results" / f"{A}.lut.json").read_text() == NO_TRANSFER
    assert _changed(repo) - CROSS_TARGET == {f"latency_table@{PHONE}"}
