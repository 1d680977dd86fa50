"""The Ray Serve application: our FastAPI app (main.create_app) as a deployment of N replicas.

`build_app` is the application builder for both `python -m cluster` (make cluster) and a Serve config
file (`import_path: cluster.app:build_app`). Each replica is one process with one model; the server's
settings (config.py) reach it as environment variables, the cluster's (cluster/settings.py) shape the
deployment.
"""

from __future__ import annotations

import math
from typing import Any, cast

from fastapi import FastAPI
from ray import serve
from ray.serve.config import BackpressureConfig

from api.state import app_state
from cluster.peers import RayPeers
from cluster.settings import ClusterSettings
from config import Settings
from services.jobs.store import SentenceText

# Short requests (/health, /voices, /stream_status ...) a replica takes on top of its streams, so the
# router never holds them behind streams; streams themselves are limited by the replica's own gate.
SHORT_REQUEST_HEADROOM = 16

SHUTDOWN_MARGIN_S = 10.0

_replica_app: FastAPI | None = None  # this replica process's app (check_health reads its state)
_replica_peers: RayPeers | None = None  # its link to the others (speak_job_sentence speaks through it)


def _build_replica_app() -> FastAPI:
    """Runs in each replica: the same app as `run.py` serves, linked to the other replicas."""
    from main import create_app  # imported in the replica, after its runtime env is in place

    global _replica_app, _replica_peers
    replica_id = serve.get_replica_context().replica_id
    peers = _replica_peers = RayPeers(replica_id.unique_id, replica_id.deployment_id.app_name)
    _replica_app = create_app(peers=peers, request_exit=lambda: None, wait_for_model=True)
    return _replica_app


@serve.deployment(name="xtts")
@serve.ingress(_build_replica_app)
class XttsReplica:
    """One replica. Serve starts routing to it once its lifespan has loaded and warmed the model."""

    def check_health(self) -> None:
        """Serve restarts a replica whose model failed (the lifespan's state says so)."""
        _check_health()

    async def speak_job_sentence(self, request: dict[str, Any], index: int, chapter: int, text: str) -> dict[str, Any]:
        """A job's sentence, sent by the replica driving the job (cluster/speaker.py): {"pcm"} or {"error"}."""
        return await _speak_job_sentence(request, SentenceText(index, chapter, text))


# Module functions, not the class's own code: Serve ships the class by value (its globals a copy, where
# `_replica_app` and `_replica_peers` would stay None); a function is shipped by name, and reads this module's globals.
def _check_health() -> None:
    state = app_state(_replica_app) if _replica_app is not None else None
    if state is not None and state.status == "failed":
        raise RuntimeError(state.failure or "the replica's model failed")


async def _speak_job_sentence(request: dict[str, Any], sentence: SentenceText) -> dict[str, Any]:
    if _replica_peers is None:
        return {"error": "this replica is not started"}
    return await _replica_peers.sentences.speak(request, sentence)


def deployment_options(server: Settings, cluster: ClusterSettings) -> dict[str, Any]:
    """Replicas, resources, routing limits and backpressure for the deployment."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cluster.REPLICA_NUM_CPUS, "num_gpus": cluster.REPLICA_NUM_GPUS},
        # The router sends a replica no more than its gate admits plus short requests, and picks the less
        # busy of two replicas: a replica's 429 then means the others were full too.
        "max_ongoing_requests": server.MAX_CONCURRENT_REQUESTS + server.MAX_QUEUE_SIZE + SHORT_REQUEST_HEADROOM,
        "max_queued_requests": cluster.CLUSTER_MAX_QUEUED_REQUESTS,
        "backpressure_config": BackpressureConfig(status_code=429, retry_after_s=math.ceil(server.QUEUE_TIMEOUT)),
        # Serve's one budget covers draining and our lifespan's shutdown after it (which waits up to 5 s for
        # cancelled streams to record their outcome and 2 s to leave the exchange).
        "graceful_shutdown_timeout_s": server.SHUTDOWN_TIMEOUT + SHUTDOWN_MARGIN_S,
    }
    if cluster.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": cluster.MIN_REPLICAS if cluster.MIN_REPLICAS is not None else 1,
            "max_replicas": cluster.MAX_REPLICAS,
            "target_ongoing_requests": cluster.TARGET_ONGOING_REQUESTS,
        }
    else:
        options["num_replicas"] = cluster.REPLICAS
    return options


def deployment_settings() -> Settings:
    """The server settings the deployment's shape needs (limits, timeouts), read where the application is
    built: possibly a node without the replicas' mounts, so the keys file is checked by the replicas only."""
    return Settings(API_KEYS_FILE=None)


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The application; `args` (a Serve config's `args:`) override the cluster's environment settings."""
    cluster = ClusterSettings(**(args or {}))
    deployment = cast(serve.Deployment, XttsReplica)  # what the decorators made of the class
    return deployment.options(**deployment_options(deployment_settings(), cluster)).bind()
