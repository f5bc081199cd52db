"""The ``onceflow`` command: browse the model registry, pull deployable models, show lineage.

    onceflow ls   --registry s3://bucket/models [--target ort-cpu]
    onceflow pull --registry s3://bucket/models --target ort-cpu --max-latency-ms 2 --dest model/
    onceflow show r28-0123abcd4567 [--artifacts artifacts]
    onceflow publish --registry file://registry artifacts/
    onceflow train join --endpoint HOST:PORT   (another machine joins the training job)
    onceflow exps   (DVC experiments side by side: one row per headline, one column per run)
    onceflow env --write   (record the library versions the stages depend on: environment.yaml)
    onceflow latency export --target phone --n 120 --out to-time/   (a device with no worker)
    onceflow latency import --target phone results.csv

S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, instance roles), the endpoint from --endpoint-url or AWS_ENDPOINT_URL (MinIO).
A relative ``file://`` registry is resolved against the project root (the nearest folder above
the working directory holding dvc.yaml and params.yaml) when run inside the project. Errors
print one line (secrets redacted) and exit with the error's code (2 for bad input).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from onceflow import __version__
from onceflow.config import PublishConfig
from onceflow.errors import OnceflowError


def _clean_help(text: str) -> str:
    """Help without the type placeholders typer adds (``<str>``, ``{MODEL}``)."""
    text = re.sub(r"\{([A-Z][A-Z_]*)\}", r"\1", text)
    return re.sub(r" <[a-z][a-z ]*>", "", text)


class _Command(TyperCommand):
    def get_help(self, ctx: Any) -> str:
        return _clean_help(super().get_help(ctx))


class _OneLineErrors(TyperGroup):
    """Usage errors (bad or missing options) as one redacted 'error: ...' line, exit code 2."""

    def get_help(self, ctx: Any) -> str:
        return _clean_help(super().get_help(ctx))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        from onceflow.uri import redact

        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        except typer.TyperException as err:  # click's usage errors, through typer's public base
            ctx = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError" and ctx is not None:  # a bare group
                typer.echo(_clean_help(ctx.get_help()), err=True)
                sys.exit(err.exit_code)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            msg = " ".join(redact(err.format_message()).split())
            typer.echo(f"error: {msg}{where}", err=True)
            sys.exit(err.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="onceflow",
    cls=_OneLineErrors,
    help="Once-for-All NAS as MLOps software: browse, pull and inspect registry models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_REGISTRY = "file://registry"

Registry = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="ONCEFLOW_REGISTRY",
        metavar="URI",
        help="file://DIR or s3://BUCKET/PREFIX. A relative file:// directory is taken from the "
        "project root (the folder holding dvc.yaml and params.yaml) when run inside the "
        "project, else from the working directory.",
    ),
]
Endpoint = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO "
        "(default: AWS_ENDPOINT_URL, else AWS S3).",
    ),
]
# The registry commands' default attempts per S3 request: the publish section's.
MAX_ATTEMPTS: int = PublishConfig.model_fields["max_attempts"].default
Attempts = Annotated[
    int,
    typer.Option(
        "--max-attempts", min=1, max=20, metavar="N", help="Attempts per S3 request (backoff)."
    ),
]
Target = Annotated[
    str | None, typer.Option("--target", metavar="NAME", help="Only this target, e.g. ort-cpu.")
]


def _user_errors(fn: F) -> F:
    """Turn OnceflowError into one 'error: ...' line on stderr (redacted) and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from onceflow.stage import setup_logging
        from onceflow.uri import redact

        setup_logging("WARNING")
        try:
            return fn(*args, **kwargs)
        except OnceflowError as err:
            msg = " ".join(redact(str(err)).split())  # one line, whatever the message held
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _store(registry: str, max_attempts: int, endpoint_url: str | None = None) -> Any:
    from onceflow.registry import StoreOptions, open_store
    from onceflow.registry.store import resolve_registry

    # Checked where it is used (open_store, the S3 client), with this command's one-line errors.
    options = StoreOptions.model_construct(endpoint_url=endpoint_url, max_attempts=max_attempts)
    return open_store(resolve_registry(registry), options)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head) - 1)]
    for r in (head, *rows):
        typer.echo(
            "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        )


@app.command("ls", cls=_Command)
@_user_errors
def ls_cmd(
    registry: Registry = DEFAULT_REGISTRY,
    target: Target = None,
    all_revisions: Annotated[
        bool,
        typer.Option("--all-revisions", help="List every revision, not only each model's newest."),
    ] = False,
    endpoint_url: Endpoint = None,
    max_attempts: Attempts = MAX_ATTEMPTS,
) -> None:
    """List published models as a table (fastest first, per target)."""
    from onceflow.registry import list_models

    store = _store(registry, max_attempts, endpoint_url)
    per_target = list_models(store, target, all_revisions=all_revisions)
    rows = [
        (
            t,
            e.model_id,
            e.revision or "-",
            f"{100 * e.test_accuracy:.2f}",
            f"{e.latency_ms:.3f}",
            _fmt(e.predicted_latency_ms, ".3f"),
            _fmt(e.budget_ms, "g"),
            e.arch,
        )
        for t, entries in per_target.items()
        for e in entries
    ]
    if not rows:
        typer.echo(f"no models in {store.uri}" + (f" for target {target}" if target else ""))
        return
    head = ("TARGET", "MODEL ID", "REVISION", "ACC %", "LATENCY ms", "PREDICTED ms", "BUDGET ms")
    _table((*head, "ARCH"), rows)


@app.command(cls=_Command)
@_user_errors
def pull(
    target: Annotated[
        str, typer.Option("--target", metavar="NAME", help="Hardware target, e.g. ort-cpu.")
    ],
    dest: Annotated[
        Path,
        typer.Option(
            "--dest",
            metavar="DIR",
            help="Directory for the model files: new, empty, or an earlier pull.",
        ),
    ],
    registry: Registry = DEFAULT_REGISTRY,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--max-latency-ms",
            min=0.0,
            metavar="MS",
            help="Latency budget (measured on the target): the most accurate model within it.",
        ),
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            min=0.0,
            max=1.0,
            metavar="FRACTION",
            help="Accuracy floor, e.g. 0.85. Alone: the fastest model that meets it; with "
            "--max-latency-ms: the most accurate within the budget that meets it.",
        ),
    ] = None,
    model_id: Annotated[
        str | None, typer.Option("--model-id", metavar="ID", help="Pull exactly this model.")
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision",
            metavar="HEX",
            help="A model's revision (see `ls --all-revisions`); default: the newest.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Write into a non-empty directory that is not an earlier pull (replaces only "
            "model.onnx, model.plan, README.md, manifest.json; other files are kept).",
        ),
    ] = False,
    endpoint_url: Endpoint = None,
    max_attempts: Attempts = MAX_ATTEMPTS,
) -> None:
    """Pull a model, verified by sha256 before anything lands in --dest.

    Chooses by --max-latency-ms and/or --min-accuracy (or exactly --model-id).
    """
    from onceflow.registry import pull_model

    res = pull_model(
        _store(registry, max_attempts, endpoint_url),
        target,
        dest,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        model_id=model_id,
        revision=revision,
        force=force,
    )
    e = res.entry
    typer.echo(
        f"pulled {res.target}/{e.label}: test accuracy {100 * e.test_accuracy:.2f}%, "
        f"latency {e.latency_ms:.3f} ms, arch {e.arch}"
    )
    typer.echo(f"  -> {res.dest}: {', '.join(res.files)} (sha256 verified)")


@app.command(cls=_Command)
@_user_errors
def show(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="A model id, or the path of a package directory."),
    ],
    registry: Registry = DEFAULT_REGISTRY,
    target: Target = None,
    revision: Annotated[
        str | None,
        typer.Option("--revision", metavar="HEX", help="A revision (default: the newest)."),
    ] = None,
    artifacts: Annotated[
        Path | None,
        typer.Option(
            "--artifacts",
            metavar="DIR",
            help="Read the local package DIR/TARGET/MODEL instead of the registry "
            "(e.g. artifacts).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lineage as JSON.")] = False,
    endpoint_url: Endpoint = None,
    max_attempts: Attempts = MAX_ATTEMPTS,
) -> None:
    """Print a model's lineage: git commit, params of every stage, DVC hashes of its inputs."""
    from onceflow.package.manifest import MANIFEST, load_manifest

    local = Path(model)
    if (local / MANIFEST).is_file() or artifacts is not None:
        pkg = local if (local / MANIFEST).is_file() else _find_package(artifacts, model, target)
        manifest, source, rev = load_manifest(pkg), str(pkg), None
    else:
        manifest, source, rev = _registry_manifest(
            _store(registry, max_attempts, endpoint_url), model, target, revision
        )
    if as_json:
        doc = {
            "model_id": manifest["model_id"],
            "target": manifest["target"],
            "revision": rev,
            "source": source,
            "lineage": manifest.get("lineage") or {},
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for line in lineage_lines(manifest, source, rev):
        typer.echo(line)


def _find_package(artifacts: Path | None, model: str, target: str | None) -> Path:
    from onceflow.errors import RegistryError
    from onceflow.package.manifest import MANIFEST, check_name

    root = artifacts if artifacts is not None else Path("artifacts")
    check_name("model id", model)
    if target is not None:
        check_name("target", target)
    if not root.is_dir():
        raise RegistryError(f"--artifacts {root}: no such directory (run `dvc repro` first)")
    found = sorted(p.parent for p in root.glob(f"{target or '*'}/{model}/{MANIFEST}"))
    if not found:
        raise RegistryError(f"--artifacts {root}: no package {model!r} (looked in */{model}/)")
    if len(found) > 1:
        raise RegistryError(f"{model!r} is packaged for several targets in {root}; add --target")
    return found[0]


def _registry_manifest(
    store: Any, model: str, target: str | None, revision: str | None
) -> tuple[dict[str, Any], str, str | None]:
    import tempfile

    from onceflow.registry import fetch_manifest, find_model

    t, entry = find_model(store, model, target, revision)
    with tempfile.TemporaryDirectory(prefix="onceflow-show-") as tmp:
        manifest = fetch_manifest(store, t, entry, Path(tmp) / "manifest.json")
    return manifest, f"{store.uri}/{t}/{entry.label.replace('@', '/')}", entry.revision


def lineage_lines(manifest: Mapping[str, Any], source: str, revision: str | None) -> list[str]:
    """The human-readable lineage of a manifest (what `onceflow show` prints)."""
    from onceflow.package.lineage import flatten

    lin = manifest.get("lineage") or {}
    lat = manifest.get("latency_ms") or {}
    git = lin.get("git") or {}
    dirty = {True: "uncommitted changes", False: "clean", None: "state unknown"}
    lines = [
        f"model      {manifest['model_id']} (target {manifest['target']}"
        + (f", revision {revision})" if revision else ")"),
        f"from       {source}",
        f"accuracy   {100 * float(manifest['test_accuracy']):.2f}% test top-1; latency "
        f"{_fmt(lat.get('measured'), '.3f')} ms measured, {_fmt(lat.get('predicted'), '.3f')} "
        "ms predicted",
        f"git commit {git.get('commit') or 'unknown'} ({dirty.get(git.get('dirty'), '?')})",
        "libraries  "
        + (
            ", ".join(f"{k} {v or '-'}" for k, v in lin["versions"].items())
            if isinstance(lin.get("versions"), dict)
            else "not recorded (an older onceflow)"
        ),
        "inputs     (DVC's md5 as dvc.lock records it)",
    ]
    roles = lin.get("dvc_lock") or {}
    width = max((len(r) for r in roles), default=0)
    pwidth = max((len(str(r.get("path"))) for r in roles.values()), default=0)
    for role, rec in roles.items():
        md5 = rec.get("md5") or "not in dvc.lock"
        stage = f"  stage {rec['stage']}" if rec.get("stage") else ""
        stale = (
            "  (workspace differed: not reproducible)"
            if rec.get("matches_workspace") is False
            else ""
        )
        lines.append(f"  {role:<{width}}  {rec.get('path')!s:<{pwidth}}  {md5}{stage}{stale}")
    stages = lin.get("stages")
    if not stages:
        lines.append("stages     not recorded (built outside `dvc repro` or by an older onceflow)")
    else:
        lines.append("stages     (params each upstream stage ran with, from dvc.lock)")
        for name, rec in stages.items():
            params = {}
            for values in (rec.get("params") or {}).values():
                params.update(flatten(values))
            lines.append(f"  {name}: " + (f"{len(params)} params" if params else "no params"))
            lines += [f"    {k} = {json.dumps(v)}" for k, v in sorted(params.items())]
    return lines


@app.command(cls=_Command)
@_user_errors
def publish(
    path: Annotated[
        Path,
        typer.Argument(metavar="PATH", help="An artifacts dir (TARGET/ID/) or one package."),
    ],
    registry: Registry = DEFAULT_REGISTRY,
    endpoint_url: Endpoint = None,
    max_attempts: Attempts = MAX_ATTEMPTS,
) -> None:
    """Publish packages: immutable revision objects first, the index last (conditional write)."""
    from onceflow.package.manifest import MANIFEST
    from onceflow.registry import publish_all, publish_package

    store = _store(registry, max_attempts, endpoint_url)
    if (path / MANIFEST).is_file():
        results = [publish_package(store, path)]
    else:
        results = publish_all(store, path)
    for r in results:
        typer.echo(
            f"{r.status:9s} {r.target}/{r.model_id}" + (f"@{r.revision}" if r.revision else "")
        )


@app.command(cls=_Command)
@_user_errors
def report(
    root: Annotated[Path, typer.Option("--root", help="The project directory.")] = Path("."),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The page to write (default: ROOT/reports/run.html; with --baseline "
            "ROOT/reports/run-vs-BASELINE.html).",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Compare with the run at this git revision or DVC experiment (`dvc exp show` "
            "names them): every headline next to the baseline's, with the difference.",
        ),
    ] = None,
) -> None:
    """Write the run report: one self-contained HTML page (no network needed to read it)."""
    import re

    from onceflow.errors import DataError
    from onceflow.report import write_report

    if not root.is_dir():
        raise DataError(f"--root {root}: not a directory (give the project directory)")
    if out is None:
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", baseline) if baseline else ""
        out = root / "reports" / (f"run-vs-{tag}.html" if baseline else "run.html")
    try:
        page = write_report(root, out, baseline=baseline)
    except OSError as err:
        raise DataError(f"cannot write the report: {err}") from None
    typer.echo(f"run report: {page.resolve()}")


@app.command(cls=_Command)
@_user_errors
def exps(
    root: Annotated[Path, typer.Option("--root", help="The project directory.")] = Path("."),
    all_headlines: Annotated[
        bool,
        typer.Option("--all", help="Every headline, not only those that differ between runs."),
    ] = False,
) -> None:
    """Compare DVC experiments in a terminal: `dvc exp show` on its side, one row per headline
    (and per param that differs), one column per commit or experiment; details left out."""
    from onceflow.errors import DataError
    from onceflow.experiments import exp_show_json, experiments_table

    if not root.is_dir():
        raise DataError(f"--root {root}: not a directory (give the project directory)")
    lines, pending = experiments_table(exp_show_json(root), all_headlines=all_headlines)
    for line in lines or ["no results yet: run `dvc repro` or `dvc exp run`"]:
        typer.echo(line)
    if pending:
        typer.echo(f"not shown (see `dvc queue status`): {', '.join(pending)}")


def _sub_app(name: str, help: str) -> typer.Typer:
    """A command group of ``onceflow`` with its one-line errors."""
    sub = typer.Typer(name=name, cls=_OneLineErrors, help=help, no_args_is_help=True,
                      add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode=None)  # fmt: skip
    app.add_typer(sub)
    return sub


train_app = _sub_app("train", "Supernet training across machines.")


@train_app.command("join", cls=_Command)
@_user_errors
def train_join(
    endpoint: Annotated[
        str,
        typer.Option(
            "--endpoint",
            envvar="ONCEFLOW_RDZV_ENDPOINT",
            metavar="HOST:PORT",
            help="The rendezvous the first node (the DVC stage train_supernet) hosts.",
        ),
    ],
    params: Annotated[
        Path, typer.Option("--params", metavar="FILE", help="This checkout's params.")
    ] = Path("params.yaml"),
    data: Annotated[
        Path,
        typer.Option("--data", metavar="DIR", help="The prepared data (`dvc pull data/prepared`)."),
    ] = Path("data/prepared"),
) -> None:
    """Join this machine to a supernet training job as another node (train.processes ranks).

    Run it in a checkout of the first node's revision with the prepared data pulled from the
    DVC remote: a node whose code, params or data digest differs is refused. It writes
    nothing; the first node writes the outputs, checkpoints and metrics.
    """
    import logging
    import os

    from onceflow.train.nodes import join_job

    logging.getLogger().setLevel(os.environ.get("ONCEFLOW_LOG_LEVEL", "INFO").upper())
    join_job(endpoint, params, data)


latency_app = _sub_app(
    "latency", "Latency tables for devices that run no worker: export subnets, import timings."
)
ParamsFile = Annotated[Path, typer.Option("--params", metavar="FILE", help="The params file.")]
SupernetDir = Annotated[
    Path, typer.Option("--supernet", metavar="DIR", help="The trained supernet (its space).")
]


@latency_app.command("export", cls=_Command)
@_user_errors
def latency_export(
    target: Annotated[str, typer.Option("--target", metavar="NAME", help="The target.")],
    n: Annotated[int, typer.Option("--n", min=2, metavar="N", help="Subnets to export.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="A new directory.")],
    params: ParamsFile = Path("params.yaml"),
    supernet: SupernetDir = Path("models/supernet"),
) -> None:
    """Write N subnets covering the space as ONNX files + manifest.json (arch, input shape) +
    README.txt (how to report the timings) for the device of TARGET."""
    from onceflow.config import load_params
    from onceflow.latency.roundtrip import export_for_target

    done = export_for_target(load_params(params), target, n, out, supernet, params_file=params)
    typer.echo(f"exported {n} subnets to {done}; time them on the device (see README.txt)")


@latency_app.command("import", cls=_Command)
@_user_errors
def latency_import(
    results: Annotated[Path, typer.Argument(metavar="RESULTS.csv", help="arch|id,latency_ms")],
    target: Annotated[str, typer.Option("--target", metavar="NAME", help="The target.")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", metavar="FILE", help="The export manifest (rows by id)."),
    ] = None,
    transfer_from: Annotated[
        str | None,
        typer.Option(
            "--transfer-from",
            metavar="NAME",
            help="An attached target whose LUT (latency/NAME/lut.json) the fit may use.",
        ),
    ] = None,
    params: ParamsFile = Path("params.yaml"),
    supernet: SupernetDir = Path("models/supernet"),
) -> None:
    """Check device timings (every arch in the space, finite positive ms, enough distinct
    subnets; repeats merged) and write TARGET's results file (with --transfer-from, also that
    target's LUT next to it; without, any earlier one is removed); then `dvc repro` builds its
    latency table, search and packages."""
    from onceflow.config import load_params
    from onceflow.latency.roundtrip import import_for_target

    dest, n = import_for_target(
        load_params(params),
        target,
        results,
        supernet,
        manifest=manifest,
        transfer_from=transfer_from,
        params_file=params,
    )
    typer.echo(f"imported {n} subnets for {target} into {dest}; next: dvc repro")


@app.command(cls=_Command)
@_user_errors
def env(
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Record them in environment.yaml (rewritten only when a "
            "version changed; scripts/setup.sh runs this).",
        ),
    ] = False,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            metavar="DIR",
            help="The project (default: the folder holding "
            "dvc.yaml and params.yaml above the working directory).",
        ),
    ] = None,
) -> None:
    """Print the installed versions of the libraries that change numbers (the stages' DVC
    inputs, see environment.yaml)."""
    from onceflow.environment import installed_versions, write_environment
    from onceflow.registry.store import project_root

    for lib, v in installed_versions().items():
        typer.echo(f"{lib:<12} {v or 'not installed'}")
    if write:
        path, changed = write_environment(root or project_root() or Path.cwd())
        typer.echo(f"{path}: {'updated' if changed else 'up to date'}")


@app.command(cls=_Command)
def version() -> None:
    """Print the onceflow version."""
    typer.echo(__version__)
