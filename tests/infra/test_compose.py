"""infra/: Docker cannot run here, so check the compose file parses and agrees with the code."""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from flows.deploy import WEEKLY

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (INFRA / ".env.example").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
ONESHOT = {"minio-init", "deploy"}


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_services_and_named_volumes() -> None:
    assert {"postgres", "prefect-server", "minio", "minio-init", "deploy", "cpu-worker",
            "gpu-worker"} <= set(SERVICES)  # fmt: skip
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
    assert SERVICES["gpu-worker"]["profiles"] == ["gpu"]


def test_long_running_services_have_healthchecks_and_wait_for_healthy_deps() -> None:
    for name, svc in SERVICES.items():
        if name not in ONESHOT:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in ONESHOT else "service_healthy"
            assert cond == {"condition": want}, f"{name} -> {dep}: {cond}"


def test_every_variable_comes_from_env_example() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M).replace("$$", "")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}", text))
    defaulted = set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
    missing = used - set(ENV_EXAMPLE) - defaulted
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert ENV_EXAMPLE["ONCEFLOW_CRON"] == WEEKLY


def test_containers_reach_services_by_their_compose_names() -> None:
    for name in ("deploy", "cpu-worker", "gpu-worker"):
        env = _env(name)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        # The DVC remote and the registry live in the bucket minio-init creates.
        assert env["ONCEFLOW_DVC_REMOTE"].startswith("s3://${ONCEFLOW_BUCKET}/")
        assert env["ONCEFLOW_REGISTRY"].startswith("s3://${ONCEFLOW_BUCKET}/")
        assert "publish.uri=${ONCEFLOW_REGISTRY}" in env["ONCEFLOW_SET_PARAMS"].replace(
            "s3://${ONCEFLOW_BUCKET}/models", "${ONCEFLOW_REGISTRY}"
        )
    assert "ONCEFLOW_BUCKET" in " ".join(SERVICES["minio-init"]["command"])
    db = _env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db.startswith("postgresql+asyncpg://") and "@postgres:5432/" in db
    assert importlib.util.find_spec("asyncpg") is not None


def test_commands_name_modules_pools_and_files_that_exist() -> None:
    # `python -m X` commands import; worker pools match the deployments' pools.
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(cmd[2]) is not None, f"{name}: no module {cmd[2]}"
    assert SERVICES["deploy"]["command"][-2:] == ["--pool", "cpu"]
    cpu = SERVICES["cpu-worker"]["command"]
    assert cpu[cpu.index("--pool") + 1] == "cpu" and "--with-healthcheck" in cpu
    gpu = SERVICES["gpu-worker"]["command"]
    assert gpu[gpu.index("--pool") + 1] == "gpu"
    # Images build from the project's Dockerfile; the GPU build adds the TensorRT extra.
    for name in ("prefect-server", "deploy", "cpu-worker", "gpu-worker"):
        build = SERVICES[name]["build"]
        assert (INFRA / build["context"] / build["dockerfile"]).resolve() == INFRA / "Dockerfile"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert SERVICES["gpu-worker"]["build"]["args"]["EXTRAS"] in extras
    gpu_devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu_devices[0]["driver"] == "nvidia" and SERVICES["gpu-worker"]["runtime"] == "nvidia"
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["infra/entrypoint.sh"]' in dockerfile
    assert os.access(INFRA / "entrypoint.sh", os.X_OK)


@pytest.mark.slow
def test_entrypoint_points_dvc_at_the_remote(tmp_path: Path) -> None:
    """Run the entrypoint against a copy of it in a fake /app: it writes .dvc/config.local."""
    import subprocess

    script = (INFRA / "entrypoint.sh").read_text().replace("cd /app", f"cd {tmp_path}")
    (tmp_path / "ep.sh").write_text(script)
    env = {**os.environ, "ONCEFLOW_DVC_REMOTE": "s3://b/dvc", "AWS_ENDPOINT_URL": "http://m:9"}
    out = subprocess.run(["sh", str(tmp_path / "ep.sh"), "cat", ".dvc/config.local"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "remote = shared" in out and "no_scm = true" in out
    assert "url = s3://b/dvc" in out and "endpointurl = http://m:9" in out
