"""Render a run (:class:`~onceflow.report.collect.RunOutputs`) as one self-contained HTML page.

One builder per section (ids in :data:`~onceflow.report.html.SECTIONS`); each shows its figures
and tables when its inputs exist and says which file is missing, and which stage makes it, when
they do not. Pure: values in, a string out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from onceflow.report.collect import RunOutputs, TargetOutputs
from onceflow.report.compare import comparison_section
from onceflow.report.html import (
    COMPARISON,
    CSS,
    SECTIONS,
    Row,
    arch_cell,
    e,
    fmt,
    get,
    img,
    kv_table,
    missing,
    section,
    table,
)
from onceflow.report.specialization import specialization_section


def summary_section(run: RunOutputs) -> str:
    cards: list[tuple[str, str]] = []
    if run.gate is not None:
        cards.append(("data gate", "passed" if run.gate.get("success") else "FAILED"))
    if get(run.supernet, "val_acc_max") is not None:
        cards.append(("supernet top-1 (largest subnet)", fmt(run.supernet["val_acc_max"], "pct")))
    for t in run.targets.values():
        if get(t.latency, "within_10pct") is not None:
            cards.append((f"{t.name}: latency within ±10%", fmt(t.latency["within_10pct"], "pct")))
    if get(run.predictor, "kendall_tau") is not None:
        cards.append(("predictor Kendall τ (held-out)", fmt(run.predictor["kendall_tau"], "tau")))
    if run.manifests:
        best = max((m.get("test_accuracy") or 0.0) for m in run.manifests)
        cards.append((f"best top-1 of {len(run.manifests)} packaged model(s)", fmt(best, "pct")))
    if not cards:
        return section(
            "summary",
            "missing",
            '<p class="missing-note">Nothing has run yet: '
            "no metrics under <code>metrics/</code>. Run <code>dvc repro</code>.</p>",
        )
    body = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="v">{e(v)}</div><div class="k">{e(k)}</div></div>'
            for k, v in cards
        )
        + "</div>"
    )
    return section("summary", "ok", body)


def gate_section(run: RunOutputs) -> str:
    g = run.gate
    if g is None:
        return section(
            "data-gate",
            "missing",
            missing("validation report", "reports/data_validation.json", "prepare"),
        )
    exps = [x for x in g.get("expectations") or [] if isinstance(x, Mapping)]
    failed = [x for x in exps if not x.get("success")]
    ok = bool(g.get("success"))
    head = (
        f"<p>{fmt(g.get('n_rows'))} images checked with Great Expectations "
        f"{e(str(g.get('great_expectations_version', '')))}: "
        f"{len(failed)} of {len(exps)} expectations failed"
        + (" — nothing downstream ran on this data." if not ok else ".")
        + "</p>"
    )
    rows = [
        (
            e(str(x.get("description", x.get("name", "")))),
            "ok" if x.get("success") else "<b>FAIL</b>",
            e(str(x.get("observed", ""))),
        )
        for x in exps
    ]
    counts = kv_table(
        run.data,
        (
            ("train images", "n_train", ""),
            ("val images", "n_val", ""),
            ("test images", "n_test", ""),
            ("classes", "n_classes", ""),
        ),
    )
    body = (
        head
        + table(("expectation", "result", "observed"), rows, [not x.get("success") for x in exps])
        + counts
    )
    return section("data-gate", "ok" if ok else "failed", body, "passed" if ok else "FAILED")


def training_section(run: RunOutputs) -> str:
    if run.supernet is None and run.training_plot is None:
        return section(
            "training",
            "missing",
            missing("trained supernet", "metrics/supernet.json", "train_supernet"),
        )
    rows: tuple[Row, ...] = (
        ("val top-1, largest subnet", "val_acc_max", "pct"),
        ("val top-1, middle subnet", "val_acc_mid", "pct"),
        ("val top-1, smallest subnet", "val_acc_min", "pct"),
        ("epochs", "epochs", ""),
        ("training time", "train_seconds", "s"),
        ("parameters (largest subnet)", "params", ""),
        ("subnets in the search space", "space_size", ""),
    )
    plot = img(run.training_plot, "training curves") or missing(
        "training curves",
        "dvclive/train_supernet/plots/images/training_curves.png",
        "train_supernet",
    )
    return section(
        "training",
        "ok",
        f'<div class="grid"><div>{plot}</div><div>{kv_table(run.supernet, rows)}</div></div>',
    )


def _target_title(t: TargetOutputs) -> str:
    c = t.config or {}
    bits = [str(c[k]) for k in ("backend", "device", "precision") if c.get(k)]
    return (
        f"<h3>{e(t.name)}" + (f" <small>({e(', '.join(bits))})</small>" if bits else "") + "</h3>"
    )


def latency_section(run: RunOutputs) -> str:
    rows: tuple[Row, ...] = (
        ("estimator", "estimator", ""),
        ("held-out subnets within ±10%", "within_10pct", "pct"),
        ("Kendall τ (held-out)", "kendall_tau", "tau"),
        ("MAPE (held-out)", "mape", "pct"),
        ("MAPE before calibration", "mape_uncalibrated", "pct"),
        ("calibration", "calibration_model", ""),
        ("measured-subnet model", "measured_model", ""),
        ("measurement noise (median CV)", "noise_cv", "pct"),
        ("LUT entries", "lut_entries", ""),
        ("call overhead", "call_overhead_ms", "ms"),
        ("clock", "clock", ""),
        ("build time", "total_seconds", "s"),
    )
    parts, have = [], 0
    for t in run.targets.values():
        if t.latency is None and t.latency_plot is None:
            parts.append(
                _target_title(t)
                + missing(
                    "latency table", f"metrics/latency/{t.name}.json", f"latency_table@{t.name}"
                )
            )
            continue
        have += 1
        plot = img(t.latency_plot, f"{t.name}: predicted vs measured latency")
        parts.append(
            _target_title(t) + f'<div class="grid"><div>{plot}</div>'
            f"<div>{kv_table(t.latency, rows)}</div></div>"
        )
    if not run.targets:
        parts.append(missing("latency target", "metrics/latency/<target>.json", "latency_table"))
    intro = (
        "<p>Each target's estimator (LUT sum, calibrated; or a model fit on measured whole "
        "subnets) against end-to-end measured subnets: calibration or training subnets fit "
        "it, held-out subnets judge it.</p>"
    )
    return section("latency", "ok" if have else "missing", intro + "".join(parts))


def predictor_section(run: RunOutputs) -> str:
    p = run.predictor
    if p is None and run.predictor_plot is None:
        return section(
            "predictor",
            "missing",
            missing("accuracy predictor", "metrics/predictor.json", "predictor"),
        )
    ceiling = get(p, "label_noise.tau_ceiling")
    if ceiling is None:
        ceiling = get(p, "tau_ceiling")
    rows: tuple[Row, ...] = (
        ("chosen model", "model", ""),
        ("Kendall τ (held-out)", "kendall_tau", "tau"),
        ("Spearman ρ (held-out)", "spearman", ""),
        ("RMSE (accuracy points)", "rmse_pp", ""),
        ("subnets measured", "n_samples", ""),
        ("training subnets", "n_train", ""),
        ("held-out subnets", "n_holdout", ""),
        ("label noise (accuracy points)", "label_noise.noise_pp", ""),
        ("measuring time", "seconds_measure", "s"),
    )
    table_html = kv_table(p, rows)
    if ceiling is not None:
        table_html += table(
            ("ceiling", "value"),
            [("Kendall τ a perfect predictor would reach on these labels", e(fmt(ceiling)))],
        )
    tau = get(p, "kendall_tau")
    verdict = ""
    if isinstance(tau, int | float) and isinstance(ceiling, int | float) and ceiling > 0:
        n = get(p, "n_holdout")
        verdict = f"<p>Held-out τ {tau:.3f} against a label-noise ceiling of {ceiling:.3f}: " + (
            f"above the ceiling, so {n or 'too few'} held-out subnets are too few to tell.</p>"
            if tau > ceiling + 0.02
            else "near the ceiling: more val images (less label noise) would help more than "
            "more subnets or another model.</p>"
            if tau >= 0.9 * ceiling
            else f"{100 * tau / ceiling:.0f}% of it: more subnets or another model can help.</p>"
        )
    plot = img(run.predictor_plot, "predictor learning curve") or missing(
        "learning curve", "plots/predictor_learning_curve.png", "predictor"
    )
    return section(
        "predictor",
        "ok",
        verdict + f'<div class="grid"><div>{plot}</div><div>{table_html}</div></div>',
    )


def _picks_table(s: Mapping[str, Any] | None) -> str:
    picks = [x for x in (get(s, "selected") or []) if isinstance(x, Mapping)]
    if not picks:
        return ""
    cols: list[tuple[str, str, str]] = [
        ("budget", "budget_ms", "ms"),
        ("predicted top-1", "predicted_accuracy", "pct"),
        ("predicted latency", "predicted_latency_ms", "ms"),
        ("best random sample", "random_best_accuracy", "pct"),
        ("gain (points)", "gain_over_random_pp", ""),
        ("measured top-1", "real_accuracy", "pct"),
    ]
    cols = [c for c in cols if any(x.get(c[1]) is not None for x in picks)]
    rows = [[e(fmt(x.get(k), kind)) for _, k, kind in cols] for x in picks]
    return table([c[0] for c in cols], rows)


def search_section(run: RunOutputs) -> str:
    rows: tuple[Row, ...] = (
        ("hypervolume", "hypervolume", ""),
        ("Pareto-front size", "front_size", ""),
        ("predictor evaluations", "n_evaluations", ""),
        ("search time", "seconds", "s"),
        ("mean |predicted − measured| top-1 (points)", "mean_abs_prediction_error_pp", ""),
    )
    parts, have = [], 0
    for t in run.targets.values():
        if t.search is None and t.search_plot is None:
            parts.append(
                _target_title(t)
                + missing("search result", f"metrics/search/{t.name}.json", f"search@{t.name}")
            )
            continue
        have += 1
        plot = img(t.search_plot, f"{t.name}: Pareto front, random samples and picks")
        parts.append(
            _target_title(t) + f'<div class="grid"><div>{plot}</div><div>'
            f"{kv_table(t.search, rows)}</div></div>{_picks_table(t.search)}"
        )
    if not run.targets:
        parts.append(missing("search result", "metrics/search/<target>.json", "search"))
    intro = (
        "<p>Predicted top-1 against estimated latency: random samples of the space, the "
        "NSGA-II Pareto front, and the subnet picked for each latency budget.</p>"
    )
    return section("search", "ok" if have else "missing", intro + "".join(parts))


def _lineage(m: Mapping[str, Any]) -> str:
    lin = m.get("lineage") if isinstance(m.get("lineage"), Mapping) else {}
    git = lin.get("git") or {}
    rows = [
        ("arch", f"<code>{e(str(get(m, 'arch.string') or '–'))}</code>"),
        (
            "git commit",
            e(str(git.get("commit") or "–"))
            + (" (uncommitted changes)" if git.get("dirty") else ""),
        ),
    ]
    for role, d in (lin.get("dvc_lock") or {}).items():
        if isinstance(d, Mapping):
            rows.append(
                (
                    f"{e(role)} <small>(dvc.lock md5)</small>",
                    f"<code>{e(str(d.get('path', '')))}</code> {e(str(d.get('md5') or '–'))}",
                )
            )
    for role, h in ((lin.get("identity") or {}).get("inputs") or {}).items():
        rows.append((f"{e(role)} <small>(content sha256)</small>", e(str(h))))
    rows.append(("created", e(str(m.get("created_at", "–")))))
    rows.append(("onceflow", e(str(m.get("onceflow_version", "–")))))
    summary = (
        f"<summary>lineage of {e(str(m.get('target', '')))} "
        f"<code>{e(str(m.get('model_id', '')))}</code></summary>"
    )
    return f'<details class="lineage">{summary}' + table(("input", "identity"), rows) + "</details>"


def _off(ratio: Any) -> str:
    """A warning mark where measured latency strays >25% from the prediction (as package warns)."""
    if isinstance(ratio, int | float) and abs(ratio - 1.0) > 0.25:
        return ' <span title="measured latency is more than 25% off the prediction">⚠</span>'
    return ""


def models_section(run: RunOutputs) -> str:
    if not run.manifests:
        return section(
            "models",
            "missing",
            missing("packaged models", "artifacts/<target>/<model-id>/manifest.json", "package"),
        )
    pub = run.publish or {}
    registry = str(pub.get("registry") or "")
    status = {
        (str(x.get("target")), str(x.get("model_id"))): str(x.get("status", ""))
        for x in pub.get("packages") or []
        if isinstance(x, Mapping)
    }
    rows, bad = [], []
    for m in run.manifests:
        lat = m.get("latency_ms") if isinstance(m.get("latency_ms"), Mapping) else {}
        key = (str(m["target"]), str(m["model_id"]))
        parity = get(m, "parity.passed")
        where = (
            f"{registry.rstrip('/')}/{key[0]}/{key[1]}"
            if registry and key in status
            else "not published"
        )
        rows.append(
            [
                e(key[0]),
                f"<code>{e(key[1])}</code>",
                e(fmt(m.get("test_accuracy"), "pct")),
                e(fmt(lat.get("measured"), "ms")),
                e(fmt(lat.get("predicted"), "ms")),
                e(fmt(lat.get("ratio"))) + _off(lat.get("ratio")),
                e(fmt(lat.get("budget"), "ms")),
                e(fmt(parity)),
                e(status.get(key, "–")) + f"<br><small>{e(where)}</small>",
                arch_cell(get(m, "arch.string")),
            ]
        )
        bad.append(parity is False)
    header = (
        "target",
        "model",
        "test top-1",
        "measured",
        "predicted",
        "ratio",
        "budget",
        "parity",
        "registry",
        "subnet",
    )
    note = (
        f"<p>Registry <code>{e(registry)}</code>; pull one with "
        f"<code>onceflow pull --registry {e(registry)} --target T --max-latency-ms X</code>.</p>"
        if registry
        else "<p>Not published yet (run <code>dvc repro publish</code>).</p>"
    )
    lineage = "".join(_lineage(m) for m in run.manifests)
    return section("models", "ok", note + table(header, rows, bad) + lineage)


SECTION_BUILDERS: dict[str, Callable[[RunOutputs], str]] = {
    "summary": summary_section,
    "data-gate": gate_section,
    "training": training_section,
    "latency": latency_section,
    "predictor": predictor_section,
    "search": search_section,
    "specialization": specialization_section,
    "models": models_section,
}


def render_html(run: RunOutputs, generated_at: str, baseline: RunOutputs | None = None) -> str:
    """The whole page for ``run`` (``generated_at``: a timestamp shown in the header); with
    ``baseline`` (named by its ``root``), a comparison section follows the summary."""
    commit = run.git.get("commit")
    ident = f"commit {commit[:10]}" if commit else "not a git commit"
    if run.git.get("dirty"):
        ident += " (uncommitted changes)"
    if baseline is not None:
        ident += f" · baseline {baseline.root}"
    targets = ", ".join(run.targets) or "none"
    order = list(SECTIONS)
    if baseline is not None:
        order.insert(1, COMPARISON)
    nav = "".join(f'<a href="#{sid}">{e(title)}</a>' for sid, title in order)
    body = "\n".join(
        comparison_section(run, baseline, baseline.root)
        if sid == COMPARISON[0] and baseline is not None
        else SECTION_BUILDERS[sid](run)
        for sid, _ in order
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>onceflow run report</title><style>{CSS}</style></head><body>"
        f"<header><h1>onceflow run report</h1><p>{e(ident)} · targets: {e(targets)} · "
        f"generated {e(generated_at)} · <code>{e(run.root)}</code></p><nav>{nav}</nav></header>"
        f"<main>\n{body}\n</main><footer>onceflow · self-contained page: no network needed"
        "</footer></body></html>\n"
    )
