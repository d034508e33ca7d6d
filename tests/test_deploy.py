"""Static checks of docker-compose.yml and deploy/Dockerfile (no Docker needed)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from stream_app.config import Settings, env_name

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENDPOINT_VARS = {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "WEB_PORT"}
APP_SERVICES = ("worker", "trainer")
_INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose-style ``${VAR:-default}`` with nothing set in the environment."""
    return _INTERP.sub(lambda m: m.group(2) or "", value)


def _env(service: dict) -> dict[str, str]:
    """A service's environment as a dict, given as a mapping or a list of K=V."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        raw = {k: v for k, v in pairs}
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            value = str(value).lower()
        out[str(key)] = _interpolate("" if value is None else str(value))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _setting_env_names() -> set[str]:
    return {env_name(f) for f in dataclasses.fields(Settings)}


def test_services_exist(services):
    for name in ("kafka", "redis", "worker", "trainer"):
        assert name in services, name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_env_vars_are_settings(services, name):
    env = _env(services[name])
    known = _setting_env_names()
    ours = {k for k in env if k.startswith("STREAM_APP_") or k in ENDPOINT_VARS}
    assert ENDPOINT_VARS <= ours, f"{name}: endpoints missing"
    unknown = sorted(ours - known)
    assert not unknown, f"{name}: not a Settings env var: {unknown}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_settings_accept_compose_env(services, name):
    env = _env(services[name])
    settings = Settings.from_env(env)
    assert settings.kafka_bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.redis_url == env["REDIS_URL"]
    assert settings.web_port == int(env["WEB_PORT"])
    if "STREAM_APP_TOPIC_PARTITIONS" in env:
        assert settings.topic_partitions == int(env["STREAM_APP_TOPIC_PARTITIONS"])


def test_worker_and_trainer_commands(services):
    def cmd(service):
        c = service.get("command")
        return c if isinstance(c, list) else str(c).split()

    assert cmd(services["worker"]) == ["worker"]
    assert cmd(services["trainer"]) == ["trainer"]
    for name in APP_SERVICES:
        build = services[name].get("build") or {}
        assert build.get("dockerfile") == "deploy/Dockerfile", name
        deps = services[name].get("depends_on") or {}
        for dep in ("kafka", "redis"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)


def test_worker_scales_without_host_ports(services):
    worker = services["worker"]
    assert "replicas" in (worker.get("deploy") or {})
    assert not worker.get("ports"), "a fixed host port stops replicas from scaling"


def test_kafka_bootstrap_points_at_kafka_service(services):
    kafka_env = _env(services["kafka"])
    advertised = [urlparse(x.strip()) for x in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    addrs = {f"{u.hostname}:{u.port}" for u in advertised}
    for name in APP_SERVICES:
        for server in _env(services[name])["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            server = server.strip()
            assert server in addrs, (name, server, addrs)
            assert server.split(":")[0] in services, server


def test_redis_url_points_at_redis_service(services):
    for name in APP_SERVICES:
        url = urlparse(_env(services[name])["REDIS_URL"])
        assert url.scheme == "redis"
        assert url.hostname == "redis" and "redis" in services
        assert url.port in (None, 6379)


def test_redis_appendonly(services):
    command = services["redis"]["command"]
    command = " ".join(command) if isinstance(command, list) else command
    assert re.search(r"--appendonly\s+yes", command), command


def test_kafka_is_kraft(services):
    env = _env(services["kafka"])
    roles = {r.strip() for r in env["KAFKA_PROCESS_ROLES"].split(",")}
    assert {"broker", "controller"} <= roles
    assert "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env


@pytest.mark.parametrize("name", ["kafka", "redis", "worker"])
def test_healthchecks(services, name):
    check = services[name].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), name


def test_worker_healthcheck_hits_readyz(services):
    test = services["worker"]["healthcheck"]["test"]
    assert "/readyz" in (" ".join(test) if isinstance(test, list) else test)


def test_dockerfile():
    assert DOCKERFILE.is_file()
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "torch==2.13.0" in text
    assert re.search(r"download\.pytorch\.org/whl/cpu", text)
    assert re.search(r"HF_HUB_OFFLINE=1", text)
    assert re.search(r'^ENTRYPOINT \["stream-app"\]', text, re.M)
    assert re.search(r'^CMD \["worker"\]', text, re.M)
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.M), "image must not run as root"
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/readyz" in text
    assert re.search(r"^EXPOSE 6066", text, re.M)
