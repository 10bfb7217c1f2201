"""docker-compose.yml and .env.example, checked as data (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pymongo.uri_parser import parse_uri

SUBSTITUTION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_URL$", re.IGNORECASE)


def env_example(root: Path) -> dict[str, str]:
    values = {}
    for line in (root / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` substitution."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} is not set: {arg}")

    return SUBSTITUTION.sub(value, text)


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services(compose) -> None:
    assert {"mongo", "worker", "coordinator"} <= set(compose["services"])


def test_mongo_is_official_with_auth_volume_and_healthcheck(compose) -> None:
    mongo = compose["services"]["mongo"]
    assert re.fullmatch(r"mongo:[78](\.\d+)*", mongo["image"]), mongo["image"]
    env = service_env(mongo)
    for key in ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"):
        assert SUBSTITUTION.fullmatch(env[key]), f"{key} must come from .env"
    data = [v for v in mongo["volumes"] if v.endswith(":/data/db")]
    assert data, "MongoDB's data must be on a volume"
    assert data[0].split(":")[0] in compose["volumes"], "use a named volume for /data/db"
    health = mongo["healthcheck"]
    assert health["test"][0] in ("CMD", "CMD-SHELL") and "ping" in " ".join(health["test"])
    assert mongo["restart"] in ("always", "unless-stopped")


def test_mongo_init_script_is_mounted(compose, repo_root) -> None:
    volumes = compose["services"]["mongo"]["volumes"]
    mounts = [v for v in volumes if v.endswith(":/docker-entrypoint-initdb.d:ro")]
    assert len(mounts) == 1
    source = repo_root / mounts[0].split(":")[0]
    assert source.is_dir() and list(source.glob("*.js")), source


def test_only_mongo_and_the_dashboard_publish_a_port_and_only_on_localhost(compose) -> None:
    services = compose["services"].items()
    published = {name: s["ports"] for name, s in services if s.get("ports")}
    assert published == {"mongo": ["127.0.0.1:27017:27017"], "dashboard": ["127.0.0.1:8080:8080"]}


def test_dashboard_runs_the_coordinator_image_on_demand_with_a_token(compose) -> None:
    dashboard = compose["services"]["dashboard"]
    assert dashboard["image"] == compose["services"]["coordinator"]["image"]
    assert dashboard["command"][0] == "dashboard" and dashboard.get("profiles")
    env = service_env(dashboard)
    assert SUBSTITUTION.fullmatch(env["HPO_DASHBOARD_TOKEN"]), "the token must come from .env"
    assert env["HPO_MONGO_URL"] == service_env(compose["services"]["coordinator"])["HPO_MONGO_URL"]


def test_worker_reserves_nvidia_gpus(compose) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices
    assert all(d.get("count") == "all" for d in devices), "every worker must see every GPU"
    assert "device_ids" not in str(devices), "workers lease GPUs themselves"


def test_cpu_override_drops_the_gpu_reservation(compose_cpu_override) -> None:
    assert compose_cpu_override["services"]["worker"]["deploy"] == {}


def test_images_are_built_from_this_repository(compose, repo_root) -> None:
    for name, target in (("worker", "worker"), ("coordinator", "coordinator")):
        build = compose["services"][name]["build"]
        assert (repo_root / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
        assert build["target"] == target


def test_stop_grace_period_covers_the_worker_drain(compose, worker_grace) -> None:
    worker = compose["services"]["worker"]
    grace = worker_grace(worker["command"])
    assert duration_seconds(worker["stop_grace_period"]) > grace
    assert worker["restart"] in ("always", "unless-stopped")
    assert worker.get("init") is True, "an init process reaps DataLoader children"


def test_coordinator_is_run_on_demand(compose) -> None:
    coordinator = compose["services"]["coordinator"]
    assert coordinator.get("profiles"), "`docker compose up` must not start the coordinator"
    assert coordinator["restart"] == "no"
    assert "entrypoint" not in coordinator, "the image's ENTRYPOINT is hpo-coord"


@pytest.mark.parametrize("name", ["worker", "coordinator"])
def test_app_services_wait_for_mongo_and_share_the_dataset(compose, name) -> None:
    service = compose["services"][name]
    assert service["depends_on"]["mongo"]["condition"] == "service_healthy"
    data_dir = service_env(service)["HPO_DATA_DIR"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert volumes[data_dir] in compose["volumes"], "the dataset must be on a named volume"


@pytest.mark.parametrize("name", ["worker", "coordinator", "dashboard"])
def test_mongo_url_is_built_from_env_file(compose, repo_root, name) -> None:
    template = service_env(compose["services"][name])["HPO_MONGO_URL"]
    assert re.match(r"mongodb://\$\{[^}]+\}:\$\{[^}]+\}@mongo:27017/", template), template
    env = env_example(repo_root)
    parsed = parse_uri(interpolate(template, env))
    assert parsed["nodelist"] == [("mongo", 27017)]
    assert parsed["username"] == env["HPO_MONGO_USER"]
    assert parsed["password"] == env["HPO_MONGO_PASSWORD"]
    assert parsed["database"] == env["HPO_MONGO_DB"]
    assert parsed["options"]["authSource"] == "admin"


def test_no_plaintext_secret_in_compose(compose, repo_root) -> None:
    for name, service in compose["services"].items():
        for key, value in service_env(service).items():
            if SECRET_KEY.search(key):
                assert SUBSTITUTION.search(value), f"{name}.{key} must come from .env"
            literal = SUBSTITUTION.sub("", value)
            assert not re.search(r"://[^/@]*:[^@/]+@", literal), f"{name}.{key}: literal password"
    text = (repo_root / "docker-compose.yml").read_text()
    for key, value in env_example(repo_root).items():
        if SECRET_KEY.search(key):
            assert value not in text, f"{key}'s example value is written into docker-compose.yml"


def test_env_example_covers_every_required_variable(compose, repo_root) -> None:
    text = (repo_root / "docker-compose.yml").read_text()
    required = {m["name"] for m in SUBSTITUTION.finditer(text) if m["op"] == ":?"}
    env = env_example(repo_root)
    assert required <= set(env), required - set(env)
    for key, value in env.items():
        if "PASSWORD" in key:
            assert value == "CHANGE_ME", f".env.example must not hold a real {key}"


def test_docker_test_override_changes_only_what_the_test_host_lacks(compose_test_override) -> None:
    """The Docker test must run the production stack: its override may swap the mongo
    image (and its healthcheck command, mongosh being absent), move the published port
    (still on 127.0.0.1 only), and build the app images from another base; auth,
    volumes, networks, restart policies, commands and drain times stay as they are."""
    services = compose_test_override["services"]
    assert set(services) <= {"mongo", "worker", "coordinator"}
    mongo = services["mongo"]
    assert set(mongo) <= {"image", "ports", "healthcheck"}, set(mongo)
    assert all(str(port).startswith("127.0.0.1:") for port in mongo["ports"])
    assert "ping" in " ".join(mongo["healthcheck"]["test"])
    for name in ("worker", "coordinator"):
        service = services.get(name, {})
        assert set(service) <= {"image", "build", "environment"}, set(service)
        assert set(service.get("build", {})) <= {"network", "args"}
        assert set(service.get("build", {}).get("args", {})) <= {"BASE_IMAGE"}
        assert not {k for k in service.get("environment", {}) if k.startswith(("HPO_", "MONGO_"))}
        assert service.get("image", "").endswith(":test"), "never overwrite the production tags"
    assert set(compose_test_override) == {"services"}, "no volumes or networks of its own"
