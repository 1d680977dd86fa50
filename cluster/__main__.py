"""`python -m cluster` (what `make cluster` runs): start a local Ray head (or join RAY_ADDRESS), run the
application with its replicas behind Serve's HTTP proxy on HOST:PORT, and serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray import serve

from cluster.app import build_app
from cluster.settings import ClusterSettings
from config import Settings, get_settings
from services.utils import configure_logging

logger = logging.getLogger("xtts_server.cluster")

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "xtts"


# Secrets stay out of the runtime environment Ray records and shows (state API, dashboard).
SECRET_SETTINGS = frozenset({"API_KEYS", "ADMIN_API_KEYS"})


def replica_environment(server: Settings, cluster: ClusterSettings) -> dict[str, str]:
    """The server settings this process was given (environment or .env), for the replicas' processes,
    except the keys: a local head's processes inherit them from this process's environment instead."""
    values = server.model_dump(mode="json", include=server.model_fields_set - SECRET_SETTINGS)
    env = {name: value if isinstance(value, str) else json.dumps(value) for name, value in values.items()}
    env = {name: value for name, value in env.items() if value != "null"}
    # Each replica's torch uses the CPUs Ray reserved for it, not every core of the machine.
    env.setdefault("NUM_THREADS", str(max(1, math.floor(cluster.REPLICA_NUM_CPUS))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


# Serve's router counts each replica's ongoing requests as it sends and finishes them, corrected by what
# the replica reports; after 10 s without traffic it forgets and probes again, and a burst that arrives
# then sees every replica idle and may pile onto one (a 429 there while another has room). Local Ray
# only: on a cluster you start yourself, set it in its environment (README, Scaling out).
ROUTER_SETTINGS = {"RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S": "3600"}


def main() -> None:
    try:
        server, cluster = get_settings(), ClusterSettings()
    except ValidationError as error:
        sys.exit(f"invalid settings: {error}")
    configure_logging(server.DEBUG)
    started = time.monotonic()
    if cluster.RAY_ADDRESS is not None and SECRET_SETTINGS & server.model_fields_set:
        logger.warning(
            "API_KEYS / ADMIN_API_KEYS are not sent to the Ray cluster at %s: set them in its nodes' "
            "environment, or use API_KEYS_FILE on a mounted file", cluster.RAY_ADDRESS,
        )  # fmt: skip
    if cluster.RAY_ADDRESS is None:
        for name, value in ROUTER_SETTINGS.items():
            os.environ.setdefault(name, value)  # the local head's processes (Serve's proxy) inherit it
    local_head: dict[str, Any] = {}
    if cluster.RAY_ADDRESS is None:
        # A local head offers at least the CPUs the replicas ask for: REPLICAS=4 on 2 cores is asked for.
        replicas = cluster.MAX_REPLICAS if cluster.autoscaling else cluster.REPLICAS
        local_head["num_cpus"] = max(os.cpu_count() or 1, math.ceil((replicas or 1) * cluster.REPLICA_NUM_CPUS))
    ray.init(
        address=cluster.RAY_ADDRESS,
        runtime_env={"env_vars": replica_environment(server, cluster)},
        include_dashboard=False,
        logging_level=logging.WARNING,
        **local_head,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs handlers of its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": server.HOST, "port": server.PORT})
        # Returns once every replica has loaded and warmed its model (their lifespans wait for it).
        serve.run(build_app(), name=APP_NAME, route_prefix="/", blocking=False)
        autoscaled = f"{cluster.MIN_REPLICAS or 1}-{cluster.MAX_REPLICAS}"
        replica_count = autoscaled if cluster.autoscaling else cluster.REPLICAS
        logger.info(
            "serving on http://%s:%d/ with %s replicas (ready in %.1f s); Ctrl-C stops",
            server.HOST, server.PORT, replica_count, time.monotonic() - started,
        )  # fmt: skip
        while not stop.wait(1.0):
            pass
        logger.info("stopping: streams get SHUTDOWN_TIMEOUT=%.0f s to finish", server.SHUTDOWN_TIMEOUT)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
