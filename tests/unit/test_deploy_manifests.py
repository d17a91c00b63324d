"""The deployment files say what Packrat does: the Dockerfile, the Kubernetes Deployment, the
KServe ServingRuntime and the Ray Serve config parse, their container arguments are options
`packrat serve` accepts, and every probe points at a real health route on a declared port."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from packrat.cli import app
from packrat.ray.app import replica_settings
from packrat.server.http_inference import create_inference_app
from packrat.server.launch_config import named_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from server_fakes import FakeRepository  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEFAULT_PORTS = {"--port": 8080, "--metrics-port": 8082, "--grpc-port": 8001}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(path: Path, kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents(path) if doc["kind"] == kind]
    return found


def serve_options(args: list[str]) -> dict[str, Any]:
    """`packrat serve ARGS` parsed by the CLI itself (raises on an unknown option)."""
    command = typer.main.get_command(app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    context = serve.make_context("serve", list(args), resilient_parsing=False)
    return dict(context.params)


def listening_ports(args: list[str]) -> dict[str, int]:
    """The ports `packrat serve ARGS` listens on, by option."""
    params = serve_options(args)
    names = {"--port": "port", "--metrics-port": "metrics_port", "--grpc-port": "grpc_port"}
    ports = {}
    for option, default in DEFAULT_PORTS.items():
        value = params.get(names[option])
        ports[option] = default if value is None else int(value)
    return ports


def health_routes() -> set[str]:
    """The GET routes of the inference app, from its OpenAPI document."""
    paths = create_inference_app(FakeRepository()).openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def check_probes(container: dict[str, Any], http_port: int) -> None:
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    routes = health_routes()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        port = named[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == http_port, f"{probe} on port {port}, inference on {http_port}"
        assert get["path"] in routes, f"{probe} path {get['path']} is not a route"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, (
        "the startup probe must cover first-start profiling (10 minutes at least)"
    )


def test_dockerfile_runs_packrat_as_non_root_with_the_cache_on_a_volume() -> None:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions: dict[str, list[str]] = {}
    for line in lines:
        if line and not line.startswith("#") and line.split()[0].isupper():
            instructions.setdefault(line.split()[0], []).append(line.split(None, 1)[1])
    (user,) = instructions["USER"]
    assert user not in ("root", "0")
    (volume,) = instructions["VOLUME"]
    assert f"PACKRAT_CACHE_DIR={volume}" in " ".join(instructions["ENV"])
    exposed = {int(p) for line in instructions["EXPOSE"] for p in line.split()}
    (entrypoint,) = instructions["ENTRYPOINT"]
    command = yaml.safe_load(entrypoint)
    assert command[:2] == ["packrat", "serve"]
    (cmd,) = instructions["CMD"]
    ports = listening_ports([*command[2:], *yaml.safe_load(cmd)])
    assert exposed == {ports["--port"], ports["--metrics-port"]}
    assert serve_options(command[2:])["host"] == "0.0.0.0"


def test_kubernetes_deployment() -> None:
    path = DEPLOY / "kubernetes" / "packrat.yaml"
    deployment = of_kind(path, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = listening_ports(container["args"])
    check_probes(container, ports["--port"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["metrics"] == ports["--metrics-port"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["--metrics-port"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["cpu"] == requests["cpu"] and float(limits["cpu"]).is_integer()
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/cache/packrat" in mounts
    service = of_kind(path, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(named)


def test_kserve_serving_runtime() -> None:
    runtime = of_kind(DEPLOY / "kserve" / "servingruntime.yaml", "ServingRuntime")
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    (container,) = runtime["spec"]["containers"]
    args = [arg.replace("{{.Name}}", "resnet50") for arg in container["args"]]
    # The model: the InferenceService's name for what the storage initializer left in /mnt/models.
    assert named_spec(args[0]) == ("resnet50", "/mnt/models")
    ports = listening_ports(args)
    check_probes(container, ports["--port"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http1"] == ports["--port"] and named["h2c"] == ports["--grpc-port"]
    service = of_kind(DEPLOY / "kserve" / "inferenceservice.yaml", "InferenceService")
    assert service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]


def test_ray_serve_config() -> None:
    config = yaml.safe_load((DEPLOY / "ray" / "serve-config.yaml").read_text())
    (application,) = config["applications"]
    assert application["import_path"] == "packrat.ray:build_app"
    settings = replica_settings(application["args"])
    assert settings.deployment_options["max_replicas_per_node"] == 1
    schema = pytest.importorskip("ray.serve.schema")
    schema.ServeDeploySchema.model_validate(config)


def test_readme_serve_run_command_parses() -> None:
    readme = (ROOT / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if line.startswith("serve run packrat.ray")]
    words = shlex.split(line.split("#")[0])
    args = dict(word.split("=", 1) for word in words[3:])
    assert replica_settings(args).launch.models
