"""The ``onceflow`` command: browse the model registry and pull deployable models.

    onceflow ls   --registry s3://bucket/models [--target ort-cpu]
    onceflow pull --registry s3://bucket/models --target ort-cpu --max-latency-ms 2 --dest model/
    onceflow publish --registry file://registry artifacts/

S3 credentials and endpoint come from the standard AWS chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL for MinIO). Errors print one line and
exit non-zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from onceflow import __version__
from onceflow.errors import OnceflowError

app = typer.Typer(
    name="onceflow",
    help="Once-for-All NAS as MLOps software: browse and pull models from the registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])

Registry = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="ONCEFLOW_REGISTRY",
        help="file://<dir> or s3://<bucket>/<prefix>.",
    ),
]
Attempts = Annotated[
    int, typer.Option("--max-attempts", min=1, max=20, help="Attempts per S3 request (backoff).")
]


def _user_errors(fn: F) -> F:
    """Turn OnceflowError into one 'error: ...' line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from onceflow.stage import setup_logging

        setup_logging("WARNING")
        try:
            return fn(*args, **kwargs)
        except OnceflowError as err:
            from onceflow.registry.store import redact

            typer.echo(f"error: {redact(str(err))}", err=True)
            raise typer.Exit(err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _store(registry: str, max_attempts: int) -> Any:
    from onceflow.registry import StoreOptions, open_store

    return open_store(registry, StoreOptions(max_attempts=max_attempts))


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


@app.command("ls")
@_user_errors
def ls_cmd(
    registry: Registry = "file://registry",
    target: Annotated[str | None, typer.Option("--target", help="Only this target.")] = None,
    max_attempts: Attempts = 5,
) -> None:
    """List published models as a table (fastest first, per target)."""
    from onceflow.registry import list_models

    per_target = list_models(_store(registry, max_attempts), target)
    rows = [
        (
            t,
            e.model_id,
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
        typer.echo(f"no models in {registry}" + (f" for target {target}" if target else ""))
        return
    head = ("TARGET", "MODEL ID", "ACC %", "LATENCY ms", "PREDICTED ms", "BUDGET ms", "ARCH")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head) - 1)]
    for r in (head, *rows):
        typer.echo(
            "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        )


@app.command()
@_user_errors
def pull(
    target: Annotated[str, typer.Option("--target", help="Hardware target name, e.g. ort-cpu.")],
    dest: Annotated[Path, typer.Option("--dest", help="Directory to place the model files in.")],
    registry: Registry = "file://registry",
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", min=0.0, help="Latency budget (measured).")
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option("--min-accuracy", min=0.0, max=1.0, help="Minimum test accuracy, e.g. 0.85."),
    ] = None,
    model_id: Annotated[
        str | None, typer.Option("--model-id", help="Pull exactly this model.")
    ] = None,
    max_attempts: Attempts = 5,
) -> None:
    """Pull the most accurate model within a latency budget, verified by sha256."""
    from onceflow.registry import pull_model

    res = pull_model(
        _store(registry, max_attempts),
        target,
        dest,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        model_id=model_id,
    )
    e = res.entry
    typer.echo(
        f"pulled {res.target}/{e.model_id}: test accuracy {100 * e.test_accuracy:.2f}%, "
        f"latency {e.latency_ms:.3f} ms, arch {e.arch}"
    )
    typer.echo(f"  -> {res.dest}: {', '.join(res.files)} (sha256 verified)")


@app.command()
@_user_errors
def publish(
    path: Annotated[Path, typer.Argument(help="An artifacts dir (<target>/<id>/) or one package.")],
    registry: Registry = "file://registry",
    max_attempts: Attempts = 5,
) -> None:
    """Publish packages (files first, then the index by conditional write)."""
    from onceflow.package.manifest import MANIFEST
    from onceflow.registry import publish_all, publish_package

    store = _store(registry, max_attempts)
    if (path / MANIFEST).is_file():
        results = [publish_package(store, path)]
    else:
        results = publish_all(store, path)
    for r in results:
        typer.echo(f"{r.status:9s} {r.target}/{r.model_id}")


@app.command()
@_user_errors
def report(
    root: Annotated[Path, typer.Option("--root", help="The project directory.")] = Path("."),
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The page to write (default: ROOT/reports/run.html)."),
    ] = None,
) -> None:
    """Write the run report: one self-contained HTML page (no network needed to read it)."""
    from onceflow.errors import DataError
    from onceflow.report import write_report

    if not root.is_dir():
        raise DataError(f"--root {root}: not a directory (give the project directory)")
    try:
        page = write_report(root, out or root / "reports" / "run.html")
    except OSError as err:
        raise DataError(f"cannot write the report: {err}") from None
    typer.echo(f"run report: {page.resolve()}")


@app.command()
def version() -> None:
    """Print the onceflow version."""
    typer.echo(__version__)
