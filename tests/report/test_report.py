"""The run report: what it collects, what the page shows, the stage and the CLI command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from onceflow import stage
from onceflow.cli import app
from onceflow.report import SECTIONS, collect_run, render_html, write_report
from stages import report as report_stage
from tests.conftest import copy_repo, run_dvc
from tests.report.conftest import TARGETS, write_fake_run

SECTION_IDS = [sid for sid, _ in SECTIONS]


def _statuses(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z-]+)" data-status="([a-z]+)"', page))


def test_collect_reads_headline_and_details_and_finds_every_target(fake_run: Path) -> None:
    run = collect_run(fake_run)
    assert list(run.targets) == list(TARGETS)
    t = run.targets["ort-cpu-int8"]
    assert t.config is not None and t.config["precision"] == "int8"
    assert t.latency is not None and t.latency["lut_entries"] == 620  # from the details file
    assert t.latency["within_10pct"] == 0.96  # and the headline
    assert t.package is not None and t.package["models"] == 2 and len(t.package["packages"]) == 2
    assert t.latency_plot is not None and t.latency_plot.png.startswith(b"\x89PNG")
    assert run.gate is not None and run.gate["success"] is True
    assert run.data is not None and run.data["n_train"] == 54000 and run.data["passed"]
    assert len(run.manifests) == 4 and run.publish is not None
    assert run.specialization is not None and "matrix" in run.specialization


def test_page_has_every_section_with_embedded_figures_and_no_network(fake_run: Path) -> None:
    page = render_html(collect_run(fake_run), "2026-12-01 12:00 UTC")
    assert _statuses(page) == dict.fromkeys(SECTION_IDS, "ok")
    # self-contained: no scripts, no external references, every image a data URI
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)
    assert "http://" not in page and "https://" not in page
    # 2 targets x (latency + search) + training + predictor + specialization
    assert page.count('src="data:image/png;base64,') == 2 * 2 + 3
    # numbers a reader looks for
    assert "90.12%" in page  # supernet top-1, largest subnet
    assert "0.86" in page  # the predictor's label-noise ceiling
    assert "file:///srv/registry/ort-cpu/r28-00aabbccddee" in page  # published model's URI
    assert "0123456789" in page and "ab12.dir" in page  # lineage: commit and dvc.lock md5
    assert "Held-out τ 0.810 against a label-noise ceiling of 0.860: near the ceiling" in page


def test_missing_inputs_are_said_plainly(tmp_path: Path) -> None:
    page = render_html(collect_run(tmp_path), "now")
    assert _statuses(page) == dict.fromkeys(SECTION_IDS, "missing")
    assert "<code>reports/data_validation.json</code> is missing" in page
    assert "run <code>dvc repro train_supernet</code>" in page
    assert "this run has 0" in page  # specialization needs several targets


def test_one_target_run_explains_why_there_is_no_specialization(tmp_path: Path) -> None:
    root = write_fake_run(tmp_path / "one", targets=("ort-cpu",))
    (root / "plots" / "predictor_learning_curve.png").unlink()
    shutil.rmtree(root / "plots" / "search")
    page = render_html(collect_run(root), "now")
    s = _statuses(page)
    assert s["specialization"] == "missing" and s["predictor"] == "ok" and s["search"] == "ok"
    assert "this run has 1; add targets" in page
    assert "<code>plots/predictor_learning_curve.png</code> is missing" in page


def test_failed_gate_is_marked(tmp_path: Path) -> None:
    root = write_fake_run(tmp_path / "bad", targets=("ort-cpu",), gate_ok=False)
    page = render_html(collect_run(root), "now")
    assert _statuses(page)["data-gate"] == "failed"
    assert "12 test images also in train" in page and "nothing downstream ran" in page


def test_unreadable_inputs_do_not_break_the_page(fake_run: Path) -> None:
    (fake_run / "metrics" / "supernet.json").write_text("{not json")
    (fake_run / "metrics" / "supernet.details.json").write_text("[1, 2]")
    (fake_run / "plots" / "latency" / "ort-cpu.png").write_text("not a png")
    page = render_html(collect_run(fake_run), "now")
    assert _statuses(page)["training"] == "ok"  # the curves PNG is still there
    assert page.count('src="data:image/png;base64,') == 2 * 2 + 3 - 1


def test_stage_and_cli_write_the_page(fake_run: Path, tmp_path: Path) -> None:
    argv = ["--params", str(fake_run / "params.yaml"), "--out", str(tmp_path / "a.html")]
    for name, rel in (("validation", "reports/data_validation.json"), ("metrics", "metrics"),
                      ("plots", "plots"), ("live", "dvclive/train_supernet"),
                      ("artifacts", "artifacts")):  # fmt: skip
        argv += [f"--{name}", str(fake_run / rel)]
    assert stage.run(report_stage.main, argv) == 0
    assert _statuses((tmp_path / "a.html").read_text()) == dict.fromkeys(SECTION_IDS, "ok")

    res = CliRunner().invoke(app, ["report", "--root", str(fake_run)])
    assert res.exit_code == 0, res.output
    out = fake_run / "reports" / "run.html"
    assert res.output.strip() == f"run report: {out.resolve()}"
    assert _statuses(out.read_text())["models"] == "ok"

    bad = CliRunner().invoke(app, ["report", "--root", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "not a directory" in bad.output


def test_write_report_is_atomic(fake_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "run.html"
    assert write_report(fake_run, target) == target
    assert [p.name for p in target.parent.iterdir()] == ["run.html"]


def test_dvc_repro_report_stage(tmp_path: Path) -> None:
    """`report` is the last stage of dvc.yaml: it runs on the outputs of the others."""
    repo = copy_repo(tmp_path / "repo", {})
    write_fake_run(repo)
    # the fake run's params.yaml replaced the copied one: keep the real schema'd file
    shutil.copy(Path(__file__).resolve().parents[2] / "params.yaml", repo / "params.yaml")
    run_dvc(repo, "repro", "--single-item", "report")
    page = (repo / "reports" / "run.html").read_text()
    assert _statuses(page)["latency"] == "ok" and "ort-cpu" in page
