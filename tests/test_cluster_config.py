"""The Serve configs the README shows (cluster/serve_config.yaml, cluster/kuberay.yaml) and the environment Ray
records for the replicas, checked without starting a cluster (Ray's schema and the deployment builder only)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

pytest.importorskip("ray", reason="the cluster extra (requirements-cluster.txt) is not installed")


@pytest.mark.parametrize("config_file", ["serve_config.yaml", "kuberay.yaml"])
def test_the_serve_configs_in_the_readme_are_valid_and_build(config_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from cluster.app import build_app, deployment_options, deployment_settings
    from cluster.settings import ClusterSettings

    document = yaml.safe_load((REPO / "cluster" / config_file).read_text())
    serve_config = yaml.safe_load(document["spec"]["serveConfigV2"]) if "spec" in document else document
    application = ServeDeploySchema.model_validate(serve_config).applications[0]
    assert application.import_path == "cluster.app:build_app"
    # Built where the keys file is not mounted (Serve builds on any node): only the replicas read it.
    for name, value in application.runtime_env["env_vars"].items():
        monkeypatch.setenv(name, value)
    options = deployment_options(deployment_settings(), ClusterSettings(_env_file=None, **application.args))  # type: ignore[call-arg]
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4}
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}
    assert options["max_ongoing_requests"] == 8 + 8 + 16
    assert options["backpressure_config"].status_code == 429
    assert build_app(application.args) is not None


def test_keys_never_travel_in_the_environment_ray_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster.__main__ import replica_environment
    from cluster.settings import ClusterSettings
    from config import Settings

    monkeypatch.setenv("API_KEYS", "secret-user-key")
    monkeypatch.setenv("ADMIN_API_KEYS", "secret-admin-key")
    monkeypatch.setenv("MAX_QUEUE_SIZE", "3")
    env = replica_environment(Settings(_env_file=None), ClusterSettings(_env_file=None))  # type: ignore[call-arg]
    assert env["MAX_QUEUE_SIZE"] == "3" and env["NUM_THREADS"] == "1"
    assert "secret" not in json.dumps(env)
