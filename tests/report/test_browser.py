"""The report in a real browser: headless Chromium (Debian's `chromium`) loads reports/run.html
with the network cut off, without console errors, with every section present, and paints it;
compared with a baseline, the comparison section shows, and at 1280 px no table is wider than
the page."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onceflow.report import SECTIONS, collect_run, render_html, write_report
from tests.report.conftest import write_baseline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: .ci/run installs Debian's `chromium`")
        pytest.skip("Chromium is not installed here (apt-get install chromium; .ci/run does)")
    return CHROMIUM


def _run(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium call; any DNS lookup fails, so a page that needs the network
    shows it. The timeout only guards against a hung browser."""
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_console_check_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    """The negative control: a script error does reach the log this test reads."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>notDefined()</script>")
    res = _run(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert any("notDefined" in line for line in _console(res.stderr))


def test_report_renders_offline_with_every_section(
    chromium: str, fake_run: Path, tmp_path: Path
) -> None:
    page = write_report(fake_run, fake_run / "reports" / "run.html")
    dom = _run(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert _console(dom.stderr) == []
    found = dict(re.findall(r'<section id="([a-z-]+)" data-status="([a-z]+)"', dom.stdout))
    assert found == {sid: "ok" for sid, _ in SECTIONS}
    assert dom.stdout.count("<img ") == 7 and "data:image/png;base64," in dom.stdout

    shot = tmp_path / "run.png"
    res = _run(
        chromium,
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        page.as_uri(),
    )
    assert _console(res.stderr) == []
    from PIL import Image

    im = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert im.size == (1280, 2400)
    colors = im.getcolors(maxcolors=1 << 20) or []
    assert len(colors) > 200  # text, tables and embedded charts, not a blank page
    background = max(colors)[0] / (im.size[0] * im.size[1])
    assert background < 0.9


def test_dvc_plots_show_renders_offline(chromium: str, tmp_path: Path) -> None:
    """`dvc plots show` uses the committed page with Vega bundled in (.dvc/offline_plots.html):
    its Vega plots draw with the network cut off."""
    from tests.conftest import copy_repo, run_dvc

    repo = copy_repo(tmp_path / "repo", {})
    rows = "".join(f"{0.4 + 0.1 * i:.2f},{0.8 + 0.01 * i:.3f},pareto\n" for i in range(8))
    (repo / "plots" / "search").mkdir(parents=True)
    (repo / "plots" / "search" / "ort-cpu.csv").write_text("latency_ms,accuracy,kind\n" + rows)
    live = repo / "dvclive" / "train_supernet" / "plots" / "metrics" / "train"
    live.mkdir(parents=True)
    (live / "train_loss_max.tsv").write_text("step\ttrain_loss_max\n0\t1.5\n1\t0.9\n2\t0.6\n")
    run_dvc(
        repo,
        "plots",
        "show",
        "-o",
        "dvc_plots",
        "plots/search/ort-cpu.csv",
        "dvclive/train_supernet/plots/metrics",
    )
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "<script src=" not in html and "cdn.jsdelivr" not in html
    res = _run(
        chromium,
        tmp_path,
        "--virtual-time-budget=10000",
        "--dump-dom",
        (repo / "dvc_plots" / "index.html").as_uri(),
    )
    errors = [line for line in _console(res.stderr) if "Uncaught" in line or "Error" in line]
    assert errors == []
    assert res.stdout.count('class="marks"') == 2  # both Vega plots were drawn


# Appended to a copy of the page (the report itself has no scripts): after layout, writes the
# page's width and every table wider than its section, or reaching past the viewport, into
# the DOM that --dump-dom prints. Details elements are opened first: their tables count too.
MEASURE = """<script>
for (const d of document.querySelectorAll('details')) d.open = true;
const vw = document.documentElement.clientWidth, out = [];
for (const t of document.querySelectorAll('table')) {
  const r = t.getBoundingClientRect(), s = t.closest('section').getBoundingClientRect();
  if (r.right > s.right + 0.5 || r.right > vw) out.push(
    t.closest('section').id + ':' + Math.round(r.width) + 'px:' + t.rows[0].innerText.slice(0, 60));
}
const pre = document.createElement('pre');
pre.id = 'measured';
pre.textContent = JSON.stringify({vw, scroll: document.documentElement.scrollWidth,
  tables: document.querySelectorAll('table').length, wide: out});
document.body.appendChild(pre);
</script>"""


def test_comparison_page_fits_1280px(chromium: str, fake_run: Path, tmp_path: Path) -> None:
    base = collect_run(write_baseline(fake_run, tmp_path / "base"))
    base.root = "HEAD~1"
    page = render_html(collect_run(fake_run), "now", base)
    plain = tmp_path / "cmp.html"
    plain.write_text(page)
    dom = _run(chromium, tmp_path, "--window-size=1280,2000", "--dump-dom", plain.as_uri())
    assert _console(dom.stderr) == []
    found = dict(re.findall(r'<section id="([a-z-]+)" data-status="([a-z]+)"', dom.stdout))
    assert found == {"comparison": "ok", **{sid: "ok" for sid, _ in SECTIONS}}
    assert "vs HEAD~1" in dom.stdout and "val top-1, largest subnet" in dom.stdout

    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"))
    res = _run(chromium, tmp_path, "--window-size=1280,2000", "--dump-dom", measured.as_uri())
    got = json.loads(html.unescape(re.search(r'<pre id="measured">(.*?)</pre>', res.stdout)[1]))
    assert got["tables"] > 20  # the measurement saw the page's tables
    assert got["wide"] == [] and got["scroll"] <= got["vw"] <= 1280, got


def test_width_check_catches_a_wide_table(chromium: str, tmp_path: Path) -> None:
    """The negative control: a table of long unbreakable cells is reported."""
    cells = "".join(f"<td>{'x' * 60}{i}</td>" for i in range(6))
    page = tmp_path / "wide.html"
    page.write_text(
        f"<!DOCTYPE html><main style='max-width:1120px'><section id='s'><table><tr>{cells}"
        f"</tr></table></section></main>{MEASURE}"
    )
    res = _run(chromium, tmp_path, "--window-size=1280,800", "--dump-dom", page.as_uri())
    got = json.loads(html.unescape(re.search(r'<pre id="measured">(.*?)</pre>', res.stdout)[1]))
    assert got["wide"] and got["wide"][0].startswith("s:")
