"""Every config under cluster/ parses and carries what its tool requires; no secret is committed."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cluster.secret_scan import repository_files, scan_files, scan_text

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
LAUNCHER = CLUSTER / "aws" / "cluster.yaml"
SECRET_NAMES = ("PASSWORD", "TOKEN", "SECRET", "STORE_URI", "DATABASE_URI")


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kube_docs(kind: str | None = None) -> list[tuple[Path, dict]]:
    found = []
    for path in YAMLS:
        if path == LAUNCHER:
            continue
        for doc in documents(path):
            if "apiVersion" in doc and (kind is None or doc.get("kind") == kind):
                found.append((path, doc))
    return found


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


# ---- every YAML ------------------------------------------------------------------------------


def test_there_are_cluster_configs():
    names = {p.relative_to(CLUSTER).as_posix() for p in YAMLS}
    assert {
        "aws/cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-ablate.yaml",
        "kuberay/rayjob-ensemble.yaml",
        "kuberay/mlflow.yaml",
    } <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_every_yaml_parses(path):
    docs = documents(path)
    assert docs and all(isinstance(d, dict) for d in docs)


# ---- the Ray cluster launcher ----------------------------------------------------------------


def test_the_launcher_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    config = yaml.safe_load(LAUNCHER.read_text())
    validate_config(fillout_defaults(config))  # the schema `ray up` checks, with the AWS defaults


def test_the_launcher_has_a_cpu_head_and_8_and_1_gpu_workers():
    config = yaml.safe_load(LAUNCHER.read_text())
    assert config["cluster_name"] and config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpus = {name: spec["resources"].get("GPU", 0) for name, spec in types.items()}
    assert 8 in gpus.values() and 1 in gpus.values(), gpus
    for name, spec in types.items():
        assert {"resources", "node_config"} <= set(spec), name
        assert 0 <= spec.get("min_workers", 0) <= spec.get("max_workers", config["max_workers"]), name
        assert "InstanceType" in spec["node_config"], name
        assert spec.get("max_workers", 0) <= config["max_workers"], name  # the global cap bounds all types


def test_the_launcher_installs_the_pinned_project_and_turns_token_auth_on():
    config = yaml.safe_load(LAUNCHER.read_text())
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "-e ~/resnet-orchestrator" in setup
    assert config["file_mounts"]["~/resnet-orchestrator"] == "."
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH" in start, key
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


# ---- KubeRay ---------------------------------------------------------------------------------

RAY_DOCS = kube_docs("RayCluster") + kube_docs("RayJob")


def test_there_is_a_raycluster_and_rayjobs_for_ablate_and_ensemble():
    kinds = sorted(doc["kind"] for _, doc in RAY_DOCS)
    assert kinds.count("RayCluster") >= 1 and kinds.count("RayJob") >= 2
    entrypoints = " ".join(doc["spec"]["entrypoint"] for _, doc in kube_docs("RayJob"))
    assert "python -m orchestrator.ablate" in entrypoints
    assert "python -m orchestrator.ensemble train --preset ilsvrc2015" in entrypoints


@pytest.mark.parametrize("path,doc", RAY_DOCS, ids=lambda x: x.name if isinstance(x, Path) else x["kind"])
def test_kuberay_manifests_have_gpu_workers_token_auth_and_secret_env(path, doc):
    assert doc["apiVersion"] == "ray.io/v1"
    spec = cluster_spec(doc)
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the dashboard must not be exposed"
    for container in containers(head["template"]):
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {}), "GPU on the head"
    workers = spec["workerGroupSpecs"]
    gpu_counts = set()
    for group in workers:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        for container in containers(group["template"]):
            gpus = container["resources"]["limits"]["nvidia.com/gpu"]
            assert gpus >= 1 and container["resources"]["requests"]["nvidia.com/gpu"] == gpus
            gpu_counts.add(gpus)
    assert {1, 8} <= gpu_counts
    pods = [head["template"]] + [g["template"] for g in workers]
    if doc["kind"] == "RayJob":
        pods.append(doc["spec"]["submitterPodTemplate"])
    for pod in pods:
        for container in containers(pod):
            env = env_of(container)
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", container["name"]
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"].get("valueFrom", {}), container["name"]
    for pod in pods[:-1] if doc["kind"] == "RayJob" else pods:
        for container in containers(pod):
            env = env_of(container)
            assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http")
            for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                assert "secretKeyRef" in env[name].get("valueFrom", {}), (container["name"], name)
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/mnt/shared" in mounts, "checkpoints need storage every node sees"


@pytest.mark.parametrize("path,doc", kube_docs(), ids=lambda x: x.name if isinstance(x, Path) else x["kind"])
def test_no_literal_secrets_in_env_and_nothing_public(path, doc):
    def walk(node):
        if isinstance(node, dict):
            if "name" in node and ("value" in node or "valueFrom" in node) and isinstance(node["name"], str):
                if any(word in node["name"].upper() for word in SECRET_NAMES):
                    assert "value" not in node and "secretKeyRef" in node["valueFrom"], (path.name, node["name"])
            if node.get("kind") == "Service" or "type" in node:
                assert node.get("type") not in ("LoadBalancer", "NodePort"), path.name
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert doc.get("kind") != "Secret", "Secrets are created from the environment, never committed"


def test_rayjob_entrypoints_parse_with_the_real_clis():
    from orchestrator import ablate, ensemble

    for _, doc in kube_docs("RayJob"):
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert argv[:2] == ["python", "-m"]
        module = {"orchestrator.ablate": ablate, "orchestrator.ensemble": ensemble}[argv[2]]
        args = module.build_parser().parse_args(argv[3:])
        assert args.storage_path.startswith("/mnt/shared/"), "storage every node sees"


def test_the_mlflow_server_runs_the_start_script_with_secrets_from_the_environment():
    (deployment,) = [doc for _, doc in kube_docs("Deployment") if doc["metadata"]["name"] == "mlflow"]
    (container,) = containers(deployment["spec"]["template"])
    script = container["command"][0].split("resnet-orchestrator/", 1)[1]
    assert (ROOT / script).is_file()
    env = env_of(container)
    for name in (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
    ):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")


def test_the_start_script_refuses_to_run_without_its_secrets():
    script = ROOT / "cluster" / "mlflow" / "start-server.sh"
    text = script.read_text()
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination", "--backend-store-uri"):
        assert flag in text
    done = subprocess.run([str(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "MLFLOW_BACKEND_STORE_URI" in done.stderr and "MLFLOW_FLASK_SERVER_SECRET_KEY" in done.stderr


# ---- committed secrets -----------------------------------------------------------------------


def test_no_secret_is_committed():
    findings = scan_files(repository_files(ROOT), ROOT)
    assert not findings, "secrets in the repository:\n" + "\n".join(map(str, findings))


# Planted at run time in tmp (built by concatenation, so this file itself holds none of them).
PLANTED = {
    "aws.env": "AWS_ACCESS_KEY_ID=" + "AKIA" + "Q3EXAMPLE7KEY2ZZ",
    "aws_secret.ini": "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY1",
    "id_rsa": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow...\n",
    "values.yaml": "mlflow:\n  password: " + "s3cr3t-" + "hunter2",
    "settings.py": 'MLFLOW_TRACKING_PASSWORD = "' + "hunter2" + '-prod"',
    "ray.env": "RAY_AUTH_TOKEN=" + "9f86d081884c7d65" + "9a2feaa0c55ad015",
    "db.sh": "export URI=postgresql://mlflow:" + "Sup3rS3cret" + "@db:5432/mlflow",
    "gh.md": "token ghp_" + "a1B2c3D4e5F6g7H8i9J0" + "k1L2m3N4o5P6q7R8",
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_the_secret_scan_finds_a_planted_secret(tmp_path, name):
    planted = tmp_path / name
    planted.write_text(PLANTED[name] + "\n")
    assert scan_files([planted], tmp_path), f"missed: {PLANTED[name]!r}"


@pytest.mark.parametrize(
    "text",
    [
        "password: ${MLFLOW_PASSWORD}",
        "MLFLOW_TRACKING_PASSWORD=$MLFLOW_TRACKING_PASSWORD",
        "postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow",
        "valueFrom: {secretKeyRef: {name: x, key: password}}",
        "token = secrets.token_hex(32)",
        "admin_password = <strong-password>",
    ],
)
def test_the_secret_scan_accepts_placeholders(text):
    path = Path("example.py") if "secrets." in text else Path("example.yaml")
    assert not scan_text(text, path)


# ---- the `ray start` flags the rehearsal reads from these files --------------------------------

from tests.cluster.shipped import MACHINE_FLAGS, every_node, for_this_machine  # noqa: E402


def test_every_shipped_node_is_started_with_real_ray_start_flags():
    from ray.scripts.scripts import start

    options = {opt for param in start.params for opt in param.opts}
    nodes = every_node()
    assert {n.source.split()[0] for n in nodes} == {
        "aws/cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob-ablate.yaml",
        "kuberay/rayjob-ensemble.yaml",
    }
    for node in nodes:
        unknown = [f for f in node.flags if f.partition("=")[0] not in options]
        assert not unknown, (node.source, unknown)


def test_every_shipped_head_holds_no_cpu_and_the_trials_ask_it_for_none():
    from orchestrator.ablation import HEAD_NODE, TRIAL_DRIVER

    for node in every_node():
        if node.head:
            assert node.flag("--num-cpus") == "0", node.source  # as Ray's docs advise: no work on the head
    # What a trial driver (and so its Train controller) asks for: a share of the head, no CPU.
    assert TRIAL_DRIVER == {"CPU": 0, HEAD_NODE: 0.001}


def test_the_local_rewrite_changes_only_what_names_the_machine():
    for node in every_node():
        local = for_this_machine(node)
        kept = [f for f in node.flags if f.partition("=")[0] not in MACHINE_FLAGS and f != "--head"]
        for flag in kept:
            assert flag in local or (flag == "--dashboard-host=0.0.0.0" and "--dashboard-host=127.0.0.1" in local), (
                node.source,
                flag,
            )
        added = [f for f in local if f not in kept and f != "--dashboard-host=127.0.0.1"]
        assert added in ([], ["--num-cpus=2"]), (node.source, added)  # a worker's cores: this machine's
