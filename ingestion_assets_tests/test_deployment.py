"""The deployment (deployment/): what can be checked without a Docker engine or a cluster.

No image is built here. These tests check that the files parse; that what they name exists
(Dockerfiles, the files those copy, named volumes, the Helm claims); that no secret is written
in them and that the webserver, which has no login, is published on loopback only; that the
environment the compose file gives each service is the one the code and dagster.yaml read.
Then, in compose order and on loopback, they run the services' own commands with their compose
environment (hosts and volumes swapped for loopback and temp folders): a PostgreSQL server with
the postgres service's user, database and password, `migrate`, the code server, whose
definitions are loaded over gRPC through deployment/workspace.yaml, and the reference
ml-analyze, each with its healthcheck. The webserver's and the daemon's commands and
healthchecks are checked against the installed CLIs, not run.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from .conftest import needs
from .postgres import PostgresServer, server_bin

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deployment"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
WORKSPACE_FILE = DEPLOY / "workspace.yaml"
HELM_VALUES_FILE = DEPLOY / "helm" / "values.yaml"
PVC_FILE = DEPLOY / "helm" / "shared-uploads-pvc.yaml"
INSTANCE_FILE = ROOT / "dagster.yaml"
BIN = Path(sys.executable).parent

YAML_FILES = sorted(
    [INSTANCE_FILE, *DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")],
    key=lambda p: str(p),
)
DOCKERFILES = sorted(DEPLOY.rglob("Dockerfile"))
SERVICES = {"postgres", "code-location", "webserver", "daemon", "ml-analyze"}
DAGSTER_SERVICES = ("migrate", "code-location", "webserver", "daemon")
ASSETS = {"supplier_registry", "raw_download", "shared_file", "ml_analysis_result"}
# Without these the code location would fall back to dev paths and loopback.
REQUIRED_COURIER_ENV = {
    "MASTER_SHEET_URL",
    "SHARED_UPLOADS_DIR",
    "ML_SHARED_UPLOADS_DIR",
    "DOWNLOADS_DIR",
    "ML_ANALYZE_URL",
}
# What the operator supplies (deployment/.env); a throw-away password for these tests.
OPERATOR_ENV = {
    "DAGSTER_POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    "MASTER_SHEET_URL": "https://docs.google.com/spreadsheets/d/example/export?format=csv",
}
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key", re.I)


# ---------------------------------------------------------------- compose interpolation


class MissingVariable(Exception):
    pass


# A default holds no `${`: nested expressions (${A:-${B}}) are resolved innermost first.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>(?:[^}$]|\$(?!\{))*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value, env: Mapping[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}, ${VAR:+alt} and $$, through a document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, current = match.group("op"), match.group("arg"), env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else current
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return current
        if op in (":+", "+"):
            return "" if unset else arg
        return current or ""

    while True:  # one pass, and more only while nested expressions remain
        resolved = _VARIABLE.sub(substitute, value)
        if "${" not in resolved or resolved == value:
            return resolved
        value = resolved


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))


def compose(env: Mapping[str, str] = OPERATOR_ENV) -> dict:
    return interpolate(raw_compose(), env)


def service_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def mounts(service: dict) -> dict[str, str]:
    """Named volume (or host path) -> where the service mounts it."""
    found = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found[entry["source"]] = entry["target"]
        else:
            source, target = entry.split(":")[:2]
            found[source] = target
    return found


def option(command: list[str], *flags: str) -> str:
    for flag in flags:
        if flag in command:
            return command[command.index(flag) + 1]
    raise AssertionError(f"none of {flags} in {command}")


def with_option(command: list[str], flag: str, value: str) -> list[str]:
    command = list(command)
    command[command.index(flag) + 1] = value
    return command


# ---------------------------------------------------------------- what the code reads

_READS = re.compile(
    r"(?:_env|_env_bool|EnvVar(?:\.int)?|os\.environ\.get|os\.getenv)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"
    r"|os\.environ\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\]"
)


_LITERAL = re.compile(r"[\"']([A-Z][A-Z0-9]*_[A-Z0-9_]+)[\"']")


def env_read_by_code() -> set[str]:
    """Names passed to the environment readers, and the ALL_CAPS names of modules that read
    the environment through a table (e.g. pools.py: {pool: ("ML_ANALYZE_POOL_LIMIT", 2)})."""
    names = set()
    for path in (ROOT / "ingestion_assets").rglob("*.py"):
        text = path.read_text("utf-8")
        for match in _READS.finditer(text):
            names.add(match.group(1) or match.group(2))
        if "os.environ" in text or "os.getenv" in text:
            names.update(_LITERAL.findall(text))
    return names


def env_read_by_instance() -> set[str]:
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                names.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(INSTANCE_FILE.read_text("utf-8")))
    return names


# ---------------------------------------------------------------- Dockerfiles


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text("utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def copies(path: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD that reads the build context."""
    found = []
    for instruction, args in dockerfile_instructions(path):
        if instruction not in ("COPY", "ADD"):
            continue
        words = args.split()
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


def _glob(pattern: str) -> re.Pattern:
    """A .dockerignore pattern: `**` any number of folders, `*` and `?` within one name."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.relative_to(ROOT)} keeps .venv, .data and .env out"
    lines = [line.strip() for line in ignore.read_text("utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def build_of(service: dict) -> tuple[Path, Path]:
    build = service["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(tmp_path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The deployment's environment alone, as in the container, plus a PATH to this venv."""
    return {
        "PATH": f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **env,
    }


def stop(process: subprocess.Popen) -> None:
    """Ends the process group this test started (the code server spawns its own server)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children still alive after their parent


def wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if ready():
                return
        except AssertionError:
            raise
        except Exception:
            pass  # not listening yet
        time.sleep(0.25)
    pytest.fail(f"{what} did not come up in {timeout} s:\n{log.read_text()[-4000:]}")


def local_argv(command: list[str]) -> list[str]:
    """A container's command, with its program from this venv (the image installs the same)."""
    program = BIN / command[0]
    return [str(program) if program.exists() else command[0], *command[1:]]


def run_healthcheck(test: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    assert test[0] == "CMD", "exec form: no shell needed in the image"
    return subprocess.run(
        local_argv(test[1:]), env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def local_env(service: dict, services: dict, tmp_path: Path, db_port: int) -> dict[str, str]:
    """A service's compose environment on this machine: its volumes become temp folders,
    the other services' hosts loopback, DAGSTER_HOME a folder holding the shipped dagster.yaml
    (as the image has it), and PostgreSQL the throw-away server's port."""
    home = tmp_path / "dagster_home"
    if not home.exists():
        home.mkdir()
        shutil.copy(INSTANCE_FILE, home / "dagster.yaml")
    volumes = {target: tmp_path / "volumes" / name for name, target in mounts(service).items()}
    env = {}
    for variable, value in service_env(service).items():
        for target, folder in volumes.items():
            if value == target or value.startswith(target + "/"):
                folder.mkdir(parents=True, exist_ok=True)
                value = str(folder) + value[len(target) :]
        for host in services:
            value = value.replace(f"//{host}:", "//127.0.0.1:")
            value = "127.0.0.1" if value == host else value
        env[variable] = value
    if "DAGSTER_HOME" in env:
        env["DAGSTER_HOME"] = str(home)
    if "DAGSTER_POSTGRES_PORT" in env:
        env["DAGSTER_POSTGRES_PORT"] = str(db_port)
    return env


@pytest.fixture
def postgres_service():
    """What the compose `postgres` service provides, on a loopback port: a server whose
    superuser, database and password are the ones its POSTGRES_* variables name (password
    authentication, as in the image). Yields (port, its compose environment)."""
    if server_bin() is None:
        needs("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    env = service_env(compose()["services"]["postgres"])
    server = PostgresServer(
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"], db=env["POSTGRES_DB"]
    )
    try:
        yield server.port, env
    finally:
        server.stop()


# ================================================================ the files


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses(path):
    documents = [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


def test_compose_has_the_services_each_restarted_unless_stopped():
    services = compose()["services"]
    assert set(services) >= SERVICES
    for name, service in services.items():
        if name == "migrate":  # one shot: tables created or migrated, then it exits
            assert str(service.get("restart")) == "no"
            assert "dagster instance migrate" in " ".join(service["command"])
        else:
            assert service.get("restart") == "unless-stopped", name
            assert "healthcheck" in service, name


def test_compose_starts_in_order_of_health():
    services = compose()["services"]
    for name in ("code-location", "webserver", "daemon"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["code-location"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_refuses_to_start_without_the_password_or_the_master_sheet():
    for missing in OPERATOR_ENV:
        env = {k: v for k, v in OPERATOR_ENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            compose(env)


def test_every_build_names_a_dockerfile_and_every_image_is_pinned():
    services = compose()["services"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: an image name (built or pulled)"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pinned tag, not {image}"
        if "build" in service:
            context, dockerfile = build_of(service)
            assert context == ROOT, f"{name}: the project root is the build context"
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        else:
            assert name == "postgres", f"{name}: only PostgreSQL comes from a registry"
            assert re.fullmatch(r"postgres:\d+(-[a-z]+)?", image), "official image, major pinned"
    # One image for the code location, the webserver, the daemon and the migration.
    assert len({services[name]["image"] for name in DAGSTER_SERVICES}) == 1
    assert len({str(build_of(services[name])) for name in DAGSTER_SERVICES}) == 1


def test_every_named_volume_is_declared_and_the_shared_one_is_where_the_env_says():
    document = compose()
    services, declared = document["services"], set(document.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for source in mounts(service):
            assert not source.startswith(("/", ".", "~")), f"{name}: named volumes, no host path"
            assert source in declared, f"{name}: volume {source!r} is not declared"
            used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"

    courier, ml = services["code-location"], services["ml-analyze"]
    env = service_env(courier)
    assert mounts(courier)["shared-uploads"] == env["SHARED_UPLOADS_DIR"]
    assert mounts(ml)["shared-uploads"] == env["ML_SHARED_UPLOADS_DIR"]
    ml_mount = next(v for v in ml["volumes"] if str(v).startswith("shared-uploads:"))
    assert ml_mount.endswith(":ro"), "ml-analyze only reads the handed-off files"
    # Runs and sensors execute in the code-location container (DefaultRunLauncher via the
    # code server): the state they need survives a restart of that container.
    for variable in ("DOWNLOADS_DIR", "INBOX_DIR"):
        if variable in env:
            assert env[variable] in mounts(courier).values(), variable
    storage = env["DAGSTER_HOME"] + "/storage"
    assert mounts(courier)["dagster-storage"] == storage
    assert mounts(services["webserver"])["dagster-storage"] == storage  # compute logs
    who_shares = {n for n, s in services.items() if "shared-uploads" in mounts(s)}
    assert who_shares == {"code-location", "ml-analyze"}


def test_only_the_webserver_is_published_and_on_loopback_only():
    services = compose()["services"]
    published = {}
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not on loopback"
            published.setdefault(name, []).append(port)
    assert published == {"webserver": ["127.0.0.1:3000:3000"]}
    command = services["webserver"]["command"]
    assert option(command, "-p", "--port") == "3000"


def test_no_secret_is_written_in_the_deployment_files():
    """Secrets come from the environment (${VAR:?...}, no default) or a Secret, never a file."""
    only_from_env = re.compile(r"\$\{[A-Z][A-Z0-9_]*(:?\?[^}]*)?\}")

    def walk(node, where: str):
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    isinstance(value, str)
                    and SECRET_KEY.search(str(key))
                    and not str(key).lower().endswith("name")  # a Secret's name, not its value
                ):
                    assert value == "" or only_from_env.fullmatch(value), (
                        f"{where}: {key} holds a literal value"
                    )
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for path in YAML_FILES:
        for document in yaml.safe_load_all(path.read_text("utf-8")):
            walk(document, str(path.relative_to(ROOT)))
    for dockerfile in DOCKERFILES:
        for instruction, args in dockerfile_instructions(dockerfile):
            if instruction in ("ENV", "ARG"):
                assert not SECRET_KEY.search(args), f"{dockerfile}: {instruction} {args}"
    helm = yaml.safe_load(HELM_VALUES_FILE.read_text("utf-8"))
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in helm["postgresql"]
    # The operator's deployment/.env, with the password, is never committed.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deployment/.env"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, "deployment/.env must be ignored by git"


def test_the_environment_set_is_the_one_the_code_and_the_instance_read():
    services = compose()["services"]
    code, instance = env_read_by_code(), env_read_by_instance()
    assert {"SHARED_UPLOADS_DIR", "MASTER_SHEET_URL", "ML_ANALYZE_URL"} <= code  # the scan works
    assert "DAGSTER_POSTGRES_PASSWORD" in instance

    courier = set(service_env(services["code-location"]))
    assert courier - code - instance - {"DAGSTER_HOME"} == set(), "set, but read by nothing"
    assert REQUIRED_COURIER_ENV | instance | {"DAGSTER_HOME"} <= courier
    for name in ("webserver", "daemon"):
        env = set(service_env(services[name]))
        assert env == instance | {"DAGSTER_HOME"}, name
    migrate = set(service_env(services["migrate"]))
    assert instance | {"DAGSTER_HOME"} <= migrate
    assert migrate - code - instance - {"DAGSTER_HOME"} == set(), "set, but read by nothing"

    helm = yaml.safe_load(HELM_VALUES_FILE.read_text("utf-8"))
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert set(deployment["env"]) - code == set(), "Helm env read by nothing"


def test_the_shipped_instance_resolves_with_each_services_environment(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config

    from ingestion_assets import instance_storage

    services = compose()["services"]
    postgres = service_env(services["postgres"])
    for name in DAGSTER_SERVICES:
        for variable in env_read_by_instance():
            monkeypatch.delenv(variable, raising=False)
        for variable, value in service_env(services[name]).items():
            monkeypatch.setenv(variable, value)
        config, custom_class = dagster_instance_config(str(ROOT))
        assert custom_class is None
        for key in ("run_storage", "event_log_storage", "schedule_storage"):
            storage = config[key]
            storage_class = getattr(instance_storage, storage["class"])
            assert storage["module"] == instance_storage.__name__
            resolved = process_config(storage_class.config_type(), storage["config"])
            assert resolved.success, (name, key, [e.message for e in resolved.errors])
        db = resolved.value["postgres_db"]
        assert db["hostname"] == "postgres" and db["port"] == 5432, name
        assert db["db_name"] == postgres["POSTGRES_DB"], name
        assert db["username"] == postgres["POSTGRES_USER"], name
        assert (
            db["password"]
            == postgres["POSTGRES_PASSWORD"]
            == OPERATOR_ENV["DAGSTER_POSTGRES_PASSWORD"]
        )
        assert config["telemetry"] == {"enabled": False}
        assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_copies_files_that_exist_and_reach_the_build_context(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as an unprivileged user"
    patterns = dockerignore_patterns(dockerfile)
    for sources, _destination in copies(dockerfile):
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the project"
            assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for secret_file in (".env", "deployment/.env", ".venv", ".data", ".git"):
        assert dockerignored(secret_file, patterns), f"{secret_file} would be sent to the build"
    install = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "--constraint requirements.lock" in install, "versions pinned by the lock file"


def test_the_images_carry_the_instance_and_the_workspace_where_the_services_look():
    services = compose()["services"]
    context, dockerfile = build_of(services["code-location"])
    destinations = {tuple(s): d for s, d in copies(dockerfile)}
    home = service_env(services["code-location"])["DAGSTER_HOME"]
    assert destinations[("dagster.yaml",)] == f"{home}/dagster.yaml"
    workspace = destinations[("deployment/workspace.yaml",)]
    for name in ("webserver", "daemon"):
        assert option(services[name]["command"], "-w", "--workspace") == workspace
    cmd = [
        args for instruction, args in dockerfile_instructions(dockerfile) if instruction == "CMD"
    ]
    assert yaml.safe_load(cmd[-1]) == services["code-location"]["command"]


def test_workspace_points_at_the_code_location_service_and_port():
    services = compose()["services"]
    (entry,) = yaml.safe_load(WORKSPACE_FILE.read_text("utf-8"))["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "code-location" and server["host"] in services
    command = services["code-location"]["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert option(command, "-h", "--host") == "0.0.0.0"  # reachable from the other containers
    assert server["port"] == int(option(command, "-p", "--port"))
    healthcheck = services["code-location"]["healthcheck"]["test"]
    assert int(option(healthcheck, "-p", "--port")) == server["port"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert option(command, "-m", "--module-name") == pyproject["tool"]["dagster"]["module_name"]
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]


def test_helm_values_launch_runs_on_kubernetes_with_the_shared_claim_mounted():
    helm = yaml.safe_load(HELM_VALUES_FILE.read_text("utf-8"))
    claims = {
        doc["metadata"]["name"]: doc
        for doc in yaml.safe_load_all(PVC_FILE.read_text("utf-8"))
        if doc and doc["kind"] == "PersistentVolumeClaim"
    }
    assert claims and all(c["spec"]["accessModes"] == ["ReadWriteMany"] for c in claims.values())

    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert helm["dagster-user-deployments"]["enabled"] is True
    assert deployment["codeServerArgs"] == ["-m", "ingestion_assets.definitions"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["envSecrets"], "secret settings come from a Secret"
    env = deployment["env"]

    def mounted_claims(pod: dict) -> dict[str, str]:
        """claim name -> mount path, for one pod spec's volumes and volumeMounts."""
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert all(claim in claims for claim in volumes.values()), "claims of the manifest"
        return {volumes[m["name"]]: m["mountPath"] for m in pod["volumeMounts"]}

    for pod in (launcher, deployment):  # run pods and the code server
        paths = mounted_claims(pod)
        assert paths["courier-shared-uploads"] == env["SHARED_UPLOADS_DIR"]
        assert all("subPath" not in m for m in pod["volumeMounts"])
        state = paths["courier-state"]
        for variable in ("DOWNLOADS_DIR", "INBOX_DIR"):
            assert env[variable].startswith(state + "/"), variable
        storage = helm["additionalInstanceConfig"]["local_artifact_storage"]["config"]
        assert storage["base_dir"].startswith(state + "/"), "step outputs outlive a run pod"

    # The policies of the shipped dagster.yaml, in the chart's words.
    shipped = yaml.safe_load(INSTANCE_FILE.read_text("utf-8"))
    daemon = helm["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == shipped["concurrency"]["runs"]["max_concurrent_runs"]
    default_limit = shipped["concurrency"].get("pools", {}).get("default_limit")
    helm_pools = helm.get("concurrency", {}).get("pools", {})
    assert helm_pools.get("defaultLimit") == default_limit
    assert daemon["runRetries"] == {
        "enabled": True,
        "maxRetries": shipped["run_retries"]["max_retries"],
    }
    assert daemon["runMonitoring"]["enabled"] is True
    assert daemon["sensors"] == {
        "useThreads": shipped["sensors"]["use_threads"],
        "numWorkers": shipped["sensors"]["num_workers"],
    }
    assert helm["pythonLogs"]["pythonLogLevel"] == shipped["python_logs"]["python_log_level"]
    assert helm["telemetry"] == {"enabled": False}
    # No login: the webserver is not exposed by the chart.
    assert helm["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert helm["ingress"]["enabled"] is False


def cli_command(argv: list[str]):
    """The click command of the installed CLI that an argv runs, and the argv left for it."""
    import click
    from dagster._cli import cli as dagster_cli
    from dagster._daemon.cli import cli as daemon_cli
    from dagster_webserver.cli import cli as webserver_cli

    roots = {
        "dagster": dagster_cli,
        "dagster-daemon": daemon_cli,
        "dagster-webserver": webserver_cli,
    }
    command, rest = roots[argv[0]], list(argv[1:])
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"no `{name}` in {argv}"
    return command, rest


def test_every_dagster_command_and_healthcheck_exists_in_the_installed_clis():
    """Commands and healthchecks the containers run, against dagster 1.13's own CLIs (flags
    included); the webserver's healthcheck asks a route the installed webserver serves."""
    import dagster_webserver

    services = compose()["services"]
    argvs = []
    for service in services.values():
        command, test = (
            service.get("command") or [],
            service["healthcheck"]["test"][1:] if "healthcheck" in service else [],
        )
        if command[:2] == ["sh", "-c"]:
            argvs += [shlex.split(part) for part in command[2].split("&&")]
        else:
            argvs.append(command)
        argvs.append(test)
    checked = 0
    for argv in argvs:
        if not argv or argv[0] not in ("dagster", "dagster-daemon", "dagster-webserver"):
            continue
        command, rest = cli_command(argv)
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        flags = {word for word in rest if word.startswith("-")}
        assert flags <= options, f"{argv}: {flags - options} unknown to {command.name}"
        checked += 1
    assert checked >= 6  # migrate, code server (+ healthcheck), webserver, daemon (+ healthcheck)

    webserver = services["webserver"]
    match = re.search(
        r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(webserver["healthcheck"]["test"])
    )
    assert match and match.group(1) == option(webserver["command"], "-p", "--port")
    source = (Path(dagster_webserver.__file__).parent / "webserver.py").read_text("utf-8")
    assert f'Route("{match.group(2)}"' in source, f"{match.group(2)} is not a webserver route"


# ================================================================ the servers, for real


def start(command: list[str], env: dict, tmp_path: Path, name: str):
    """A service's command on this machine, in a process group of its own (see stop)."""
    log = tmp_path / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            local_argv(command),
            env=clean_env(tmp_path, env),
            cwd=tmp_path,  # not the project: the package is imported as installed
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


def test_code_server_starts_with_the_deployment_environment_and_serves_the_definitions(
    tmp_path, postgres_service
):
    """In compose order: postgres (healthy), migrate (done), the code location (healthy), each
    with its compose command and environment. The definitions the code server serves over gRPC,
    loaded through the deployment's workspace.yaml as the webserver and the daemon load them,
    are those of ingestion_assets.definitions."""
    from dagster import DagsterInstance
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths
    from dagster._grpc.client import DagsterGrpcClient

    from ingestion_assets.definitions import defs

    services = compose()["services"]
    db_port, postgres_env = postgres_service

    # postgres: its healthcheck command, against this server.
    healthcheck = services["postgres"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    pg_env = {**postgres_env, "PGHOST": "127.0.0.1", "PGPORT": str(db_port)}
    checked = subprocess.run(
        healthcheck[1],
        shell=True,
        env={**clean_env(tmp_path, pg_env), "PATH": f"{server_bin()}{os.pathsep}/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # migrate: the instance's tables and the pool limits, with the compose password.
    migrate = services["migrate"]
    done = subprocess.run(
        local_argv(migrate["command"]),
        env=clean_env(tmp_path, local_env(migrate, services, tmp_path, db_port)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # code-location: it opens the instance at start, so it needs the database (depends_on).
    service = services["code-location"]
    env = local_env(service, services, tmp_path, db_port)
    assert env["ML_ANALYZE_URL"].startswith("http://127.0.0.1:")
    assert env["DAGSTER_POSTGRES_PASSWORD"] == postgres_env["POSTGRES_PASSWORD"]
    grpc_port = free_port()
    command = with_option(service["command"], "-h", "127.0.0.1")
    code_server, code_log = start(
        with_option(command, "-p", str(grpc_port)), env, tmp_path, "code-location"
    )

    # The deployment's workspace.yaml, with the service's host and port made local.
    workspace = yaml.safe_load(WORKSPACE_FILE.read_text("utf-8"))
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    local_workspace = tmp_path / "workspace.yaml"
    local_workspace.write_text(yaml.safe_dump(workspace))

    try:
        client = DagsterGrpcClient(port=grpc_port, host="127.0.0.1")
        wait_until(
            lambda: client.ping("courier")["echo"] == "courier",
            code_server,
            code_log,
            "code server",
        )

        # The code location's compose healthcheck, against this server.
        grpc_health = run_healthcheck(
            with_option(service["healthcheck"]["test"], "-p", str(grpc_port)),
            clean_env(tmp_path, {}),
            tmp_path,
        )
        assert grpc_health.returncode == 0, grpc_health.stdout + grpc_health.stderr

        (origin,) = location_origins_from_yaml_paths([str(local_workspace)])
        assert isinstance(origin, GrpcServerCodeLocationOrigin)
        assert origin.location_name == "ingestion_assets"
        with DagsterInstance.ephemeral() as instance, origin.create_location(instance) as location:
            (repository,) = location.get_repositories().values()
            served_assets = {
                node.asset_key.to_user_string() for node in repository.get_asset_node_snaps()
            }
            served_jobs = {job.name for job in repository.get_all_jobs()}
            served_sensors = {sensor.name for sensor in repository.get_sensors()}
            served_schedules = {schedule.name for schedule in repository.get_schedules()}

        repo_def = defs.get_repository_def()
        assert served_assets >= ASSETS
        assert served_assets == {
            key.to_user_string() for key in repo_def.asset_graph.get_all_asset_keys()
        }
        assert {"master_sync", "supplier_sync", "shared_file_cleanup"} <= served_jobs
        assert {job.name for job in repo_def.get_all_jobs()} <= served_jobs
        assert served_sensors == {sensor.name for sensor in repo_def.sensor_defs}
        assert served_schedules == {schedule.name for schedule in repo_def.schedule_defs}
        assert served_sensors and served_schedules
    finally:
        stop(code_server)


def test_ml_analyze_service_command_serves_a_healthy_reference_server(tmp_path, catalogue_url):
    """With its catalogue: the compose database made by deployment/catalogue's SQL (here on the
    test server, made from the same file)."""
    import httpx

    services = compose()["services"]
    service = services["ml-analyze"]
    port = free_port()
    command = with_option(service["command"], "--host", "127.0.0.1")
    command = with_option(command, "--port", str(port))
    database = option(command, "--db")
    assert database.startswith(mounts(service)["ml-analyze-data"] + "/"), "on its volume"
    command = with_option(command, "--db", str(tmp_path / Path(database).name))
    password = OPERATOR_ENV["DAGSTER_POSTGRES_PASSWORD"]
    shared = f"postgresql://dagster:{password}@postgres:5432/catalogue"
    assert option(command, "--catalogue-db") == shared
    assert service_env(services["code-location"])["CATALOGUE_DATABASE_URL"] == shared
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    command = with_option(command, "--catalogue-db", catalogue_url)
    process, log = start(command, service_env(service), tmp_path, "ml-analyze")
    try:
        url = f"http://127.0.0.1:{port}/health"
        wait_until(lambda: httpx.get(url).status_code == 200, process, log, "ml-analyze", 30)
        test = [
            part.replace("127.0.0.1:8001", f"127.0.0.1:{port}")
            for part in service["healthcheck"]["test"]
        ]
        assert test != service["healthcheck"]["test"], "the healthcheck asks the service's port"
        checked = run_healthcheck(test, clean_env(tmp_path, {}), tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert httpx.get(url).json()["checks"]["catalogue_db"]["status"] == "ok"
    finally:
        stop(process)


def test_the_catalogue_is_the_reference_stacks_unless_deployment_env_names_the_production_one():
    production = "postgresql://courier:from-the-env@catalogue.internal:5432/catalogue"
    services = compose({**OPERATOR_ENV, "CATALOGUE_DATABASE_URL": production})["services"]
    assert service_env(services["code-location"])["CATALOGUE_DATABASE_URL"] == production
    postgres = raw_compose()["services"]["postgres"]
    [config] = postgres["configs"]
    assert config["target"].startswith("/docker-entrypoint-initdb.d/")
    sql = (COMPOSE_FILE.parent / raw_compose()["configs"][config["source"]]["file"]).read_text()
    assert "CREATE DATABASE catalogue;" in sql and "CREATE TABLE supplier_items" in sql
