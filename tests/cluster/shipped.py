"""The `ray start` arguments of every node that the files in cluster/ start, read from those files,
and their rewrite for one machine: the rehearsal starts its nodes with exactly these, so a change
to a shipped config is rehearsed, not only schema-checked.

- ``aws/cluster.yaml``: the `ray start` in ``head_start_ray_commands`` / ``worker_start_ray_commands``
  (the launcher adds each node type's ``resources``, as ``RAY_OVERRIDE_RESOURCES``);
- KubeRay (``raycluster.yaml``, ``rayjob-*.yaml``): ``rayStartParams`` as KubeRay turns them into
  flags (``"true"`` is a bare flag, anything else ``--key=value``; KubeRay adds ``--head``, the
  head's address for workers, and ``--num-cpus`` / ``--num-gpus`` from the container's limits
  where the params give none).

``for_this_machine`` keeps every flag except what only names the real machine: ports and the head's
address (free ports here), the autoscaler's config file (no cloud provider here), ``--block``, a
0.0.0.0 bind (127.0.0.1 here) and the workers' CPU and GPU counts (this machine's 2 cores, no GPU).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
AWS = CLUSTER / "aws" / "cluster.yaml"
KUBERAY = sorted((CLUSTER / "kuberay").glob("ray*.yaml"))  # the RayCluster and the RayJobs
LOCAL_WORKER_CPUS = 2  # this machine's cores, standing for a GPU node's
# Flags whose value names the real machine, replaced by for_this_machine.
MACHINE_FLAGS = (
    "--port",
    "--address",
    "--object-manager-port",
    "--node-manager-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--ray-client-server-port",
    "--min-worker-port",
    "--max-worker-port",
    "--autoscaling-config",
    "--temp-dir",
    "--node-name",
    "--block",
    "--num-gpus",
)


@dataclass(frozen=True)
class Node:
    """One kind of node a config starts: its `ray start` flags as the config gives them."""

    source: str  # e.g. "aws/cluster.yaml head", "kuberay/rayjob-ensemble.yaml gpu-8x"
    head: bool
    flags: tuple[str, ...]
    resources: dict = field(default_factory=dict)  # what the launcher / KubeRay declares besides the flags

    def flag(self, name: str) -> str | None:
        """The value of ``--name=value`` (or ``"true"`` for a bare flag), None when absent."""
        for flag in self.flags:
            key, sep, value = flag.partition("=")
            if key == name:
                return value if sep else "true"
        return None


def _ray_start(command: str) -> list[str]:
    """The flags of the `ray start` inside a shell command line (``... && ray start ...``)."""
    words = shlex.split(command)
    start = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["ray", "start"])
    flags = []
    for word in words[start + 2 :]:
        if word in ("&&", ";", "||"):
            break
        flags.append(word)
    return flags


def _joined(flags: list[str]) -> tuple[str, ...]:
    """``["--port", "1"]`` and ``["--port=1"]`` alike as ``("--port=1",)``."""
    out: list[str] = []
    for flag in flags:
        if out and not flag.startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={flag}"
        else:
            out.append(flag)
    return tuple(out)


def aws_nodes() -> list[Node]:
    config = yaml.safe_load(AWS.read_text())
    types = config["available_node_types"]
    head_type = types[config["head_node_type"]]
    workers = [name for name in types if name != config["head_node_type"]]
    (head_command,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    (worker_command,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    nodes = [Node("aws/cluster.yaml head", True, _joined(_ray_start(head_command)), head_type.get("resources", {}))]
    worker_flags = _joined(_ray_start(worker_command))
    nodes += [
        Node(f"aws/cluster.yaml {name}", False, worker_flags, types[name].get("resources", {})) for name in workers
    ]
    return nodes


def _kuberay_flags(params: dict) -> list[str]:
    return [
        f"--{key}" if str(value).lower() == "true" else f"--{key}={value}"
        for key, value in params.items()
        if str(value).lower() != "false"
    ]


def _limits(group: dict) -> dict:
    (container,) = group["template"]["spec"]["containers"][:1]
    limits = container.get("resources", {}).get("limits", {})
    return {"CPU": float(limits["cpu"]) if "cpu" in limits else None, "GPU": float(limits.get("nvidia.com/gpu", 0))}


def kuberay_nodes(path: Path) -> list[Node]:
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    name = path.relative_to(CLUSTER).as_posix()
    head = spec["headGroupSpec"]
    nodes = [Node(f"{name} head", True, ("--head", *_kuberay_flags(head.get("rayStartParams", {}))), _limits(head))]
    for group in spec.get("workerGroupSpecs", []):
        nodes.append(
            Node(
                f"{name} {group['groupName']}",
                False,
                tuple(_kuberay_flags(group.get("rayStartParams", {}))),
                _limits(group),
            )
        )
    return nodes


def every_node() -> list[Node]:
    return aws_nodes() + [node for path in KUBERAY for node in kuberay_nodes(path)]


def head_of(source: str) -> Node:
    return next(n for n in every_node() if n.head and n.source.startswith(source))


def worker_of(source: str) -> Node:
    return next(n for n in every_node() if not n.head and n.source.startswith(source))


def for_this_machine(node: Node) -> list[str]:
    """``node``'s flags for a node on 127.0.0.1 (see the module's docstring for what changes)."""
    flags = [f for f in node.flags if f.partition("=")[0] not in MACHINE_FLAGS and f != "--head"]
    flags = ["--dashboard-host=127.0.0.1" if f == "--dashboard-host=0.0.0.0" else f for f in flags]
    if not node.head and node.flag("--num-cpus") is None:
        flags.append(f"--num-cpus={LOCAL_WORKER_CPUS}")
    if node.head and node.flag("--num-cpus") is None and node.resources.get("CPU") is not None:
        flags.append(f"--num-cpus={node.resources['CPU']:g}")  # what the launcher / KubeRay would pass
    return flags
