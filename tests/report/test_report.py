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
from tests.report.conftest import ARCHS, TARGETS, write_baseline, write_fake_run

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
    assert run.specialization is not None and len(run.specialization["cells"]) == 4


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


def test_specialization_is_designed_tables_never_raw_structures(fake_run: Path) -> None:
    page = render_html(collect_run(fake_run), "now")
    spec = page[page.index('<section id="specialization"') :]
    spec = spec[: spec.index("</section>")]
    assert "{" not in spec and "[" not in spec  # no dict or list printed into a cell
    assert "Verdict:</b> a target&#x27;s own pick beats the others&#x27;" in spec
    # one row per target and budget, one per (host, foreign pick, budget)
    tables = [t.count("<tr") - 1 for t in spec.split("<table>")[1:]]  # rows below the header
    # summary; picks (target x budget); cells (host x foreign pick x budget); pairs;
    # rank correlation; int8 drops; accuracies measured by the stage
    assert tables == [7, 2 * 2, 2 * 1 * 2, 2, 1, 1, 1]
    # arch strings are shortened, the full string on hover
    assert f'<span class="arch" title="{ARCHS[0]}">r28-d3_2_3_3-w1_0.75_1_1…</span>' in spec
    assert f">{ARCHS[0]}<" not in spec
    assert "+16.7% ✗" in spec and 'class="bad"' in spec  # a foreign pick over the host's budget


def test_comparison_shows_every_headline_with_its_change(fake_run: Path, tmp_path: Path) -> None:
    base = collect_run(write_baseline(fake_run, tmp_path / "base"))
    base.root, base.git = "exp-small", {"commit": "feedc0de" * 5}
    page = render_html(collect_run(fake_run), "now", base)
    ids = re.findall(r'<section id="([a-z-]+)"', page)
    assert ids == ["summary", "comparison", *SECTION_IDS[1:]]
    assert _statuses(page)["comparison"] == "ok" and 'href="#comparison"' in page
    cmp = page[page.index('<section id="comparison"') :]
    cmp = cmp[: cmp.index("</section>")]
    assert "<code>exp-small</code> (commit <code>feedc0defe</code>)" in cmp
    row = re.search(r"<td>val top-1, largest subnet</td>(.*?)</tr>", cmp)
    assert row and re.findall(r">([^<>]+)</td>", row.group(1)) == ["90.12%", "89.31%", "+0.81 pp"]
    assert '<tr class="better"><td>Kendall τ (held-out)</td>' in cmp  # predictor 0.81 vs 0.74
    for t in TARGETS:  # every target's fidelity and every pick per budget
        assert f"latency table {t}" in cmp and f"pick {t} · budget 3 of 3" in cmp
    assert cmp.count("predicted latency</td>") == 3 * len(TARGETS)
    assert '<td>predicted latency</td><td class="num">0.570 ms</td>' in cmp
    assert "-0.057 ms (-9%)" in cmp  # the baseline's picks were 10% slower
    assert re.search(r"<td>models in the registry</td>.*?same</td>", cmp)
    assert "15 figures better, 0 worse, 0 changed" in cmp  # 2 + 1 + 2 x 3 x 2


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
