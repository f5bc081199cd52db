"""The stage contract: every stage module hands its paths to ``<package>/stage.py:run(params,
paths)`` through ``onceflow.stage.main``, which parses, checks and writes the same way for all."""

from __future__ import annotations

import ast
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from onceflow import stage
from onceflow.config import Params
from onceflow.errors import ConfigError, OnceflowError

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")


def _entry(module: str) -> tuple[str, list[str]]:
    """(the module ``run`` and ``Paths`` come from, the names main calls) of stages/<module>.py."""
    tree = ast.parse((ROOT / "stages" / f"{module}.py").read_text(encoding="utf-8"))
    source = next(
        n.module
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and {a.name for a in n.names} == {"Paths", "run"}
    )
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [ast.unparse(c.func) for c in ast.walk(main) if isinstance(c, ast.Call)]
    return source, calls


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_every_stage_module_is_the_contract(module: str) -> None:
    source, calls = _entry(module)
    assert source.endswith(".stage") or source == "onceflow.search_stage", source
    assert calls == ["stage.main"], f"stages/{module}.py main calls {calls}, not stage.main alone"
    lib = importlib.import_module(source)
    assert list(lib.run.__annotations__)[:2] == ["params", "paths"]


def test_every_dvc_stage_runs_a_contract_module() -> None:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, st in dvc.items():
        cmd = st["do"]["cmd"] if "do" in st else st["cmd"]
        module = cmd.split("python -m stages.", 1)[1].split()[0]
        assert module in STAGE_MODULES, f"dvc.yaml {name}: {module}"


@dataclass(frozen=True)
class ToyPaths:
    target: str
    source: str
    limit: str = field(default="3", metadata={"help": "a default"})


@dataclass
class ToyOutputs:
    headline: dict[str, Any]
    details: dict[str, Any]
    summary: str = "toy"
    fail_save: bool = False
    fail_check: bool = False

    @property
    def texts(self) -> dict[str, str]:
        return {"report": "why\n"}

    def check(self, args: Any) -> None:
        if self.fail_check:
            raise OnceflowError(f"gate failed, see {args.report}")

    def save(self, directory: Path) -> None:
        (directory / "model.bin").write_bytes(b"x")
        if self.fail_save:
            raise RuntimeError("disk full")


Seen = list[tuple[Params, ToyPaths, stage.Invocation]]


def _toy(tmp_path: Path, **outputs: Any) -> tuple[list[str], Seen, Any]:
    params = tmp_path / "params.yaml"
    params.write_text("latency:\n  targets:\n    cpu: {}\n", encoding="utf-8")
    argv = [
        "--params", str(params), "--target", "cpu", "--source", "in.txt",
        "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.txt"),
        "--metrics", str(tmp_path / "m.json"),
    ]  # fmt: skip
    seen: Seen = []

    def run(p: Params, paths: ToyPaths) -> ToyOutputs:
        seen.append((p, paths, stage.current()))
        return ToyOutputs({"top1": 0.5}, {"top1": 0.5, "n": 3}, **outputs)

    def main(args: list[str]) -> None:
        stage.main("stages.toy", "a toy stage", run, ToyPaths, ("out", "report", "metrics"), args)

    return argv, seen, main


def test_main_parses_paths_and_writes_every_output(tmp_path: Path) -> None:
    argv, seen, main = _toy(tmp_path)
    main(argv)
    ((params, paths, _),) = seen
    assert paths == ToyPaths(target="cpu", source="in.txt", limit="3")
    assert "cpu" in params.latency.targets
    assert (tmp_path / "out" / "model.bin").read_bytes() == b"x"
    assert (tmp_path / "report.txt").read_text() == "why\n"
    assert json.loads((tmp_path / "m.json").read_text()) == {"top1": 0.5}
    assert json.loads((tmp_path / "m.details.json").read_text())["n"] == 3


def test_an_unknown_target_names_the_params_file(tmp_path: Path) -> None:
    argv, seen, main = _toy(tmp_path)
    argv[argv.index("cpu")] = "gpu"
    with pytest.raises(ConfigError, match=r"params\.yaml: latency\.targets has no 'gpu' \(cpu\)"):
        main(argv)
    assert not seen and not (tmp_path / "out").exists()


def test_a_failed_check_keeps_the_texts_and_writes_nothing_else(tmp_path: Path) -> None:
    argv, _, main = _toy(tmp_path, fail_check=True)
    with pytest.raises(OnceflowError, match="gate failed"):
        main(argv)
    assert (tmp_path / "report.txt").is_file()
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_a_failed_write_leaves_no_output_it_started(tmp_path: Path) -> None:
    argv, _, main = _toy(tmp_path, fail_save=True)
    (tmp_path / "m.json").write_text("{}")  # an earlier run's: left alone
    with pytest.raises(RuntimeError, match="disk full"):
        main(argv)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "params.yaml", "report.txt"]


def test_current_names_the_running_stage_only_while_it_runs(tmp_path: Path) -> None:
    argv, seen, main = _toy(tmp_path)
    with pytest.raises(LookupError):
        stage.current()
    main(argv)
    ((_, _, command),) = seen
    assert command.module == "stages.toy" and command.argv == tuple(argv)
    assert command.outputs == (
        str(tmp_path / "out"), str(tmp_path / "report.txt"), str(tmp_path / "m.json"),
        str(tmp_path / "m.details.json"),
    )  # fmt: skip
    with pytest.raises(LookupError):
        stage.current()
