"""The cluster's own settings (environment variables, like the server's in config.py)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClusterSettings(BaseSettings):
    """How many replicas, what each gets from Ray, and how Serve routes and scales them."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    REPLICAS: int = Field(2, ge=1, le=1000)
    """Replicas (one model each) when not autoscaling."""
    MIN_REPLICAS: int | None = Field(None, ge=0, le=1000)
    """With MAX_REPLICAS: autoscale between these on ongoing requests per replica."""
    MAX_REPLICAS: int | None = Field(None, ge=1, le=1000)
    TARGET_ONGOING_REQUESTS: float = Field(4.0, gt=0)
    """The autoscaler adds replicas when ongoing requests per replica (streams, queued or generating, and
    short requests) stay above this; see README, Scaling out."""
    REPLICA_NUM_CPUS: float = Field(1.0, ge=0)
    """CPUs Ray reserves for each replica (and torch threads, unless NUM_THREADS is set)."""
    REPLICA_NUM_GPUS: float = Field(0.0, ge=0)
    """GPUs per replica: 1 for a GPU each, 0.5 to put two replicas on one GPU."""
    CLUSTER_MAX_QUEUED_REQUESTS: int = Field(100, ge=-1)
    """Requests Serve holds when every replica is at its limit; beyond, 429 with Retry-After (-1: no bound)."""
    RAY_ADDRESS: str | None = None
    """An existing Ray cluster to join (`ray start --head` or KubeRay); unset: start a local head."""

    @model_validator(mode="after")
    def _scaling_bounds(self) -> ClusterSettings:
        if self.MAX_REPLICAS is not None and (self.MIN_REPLICAS or 0) > self.MAX_REPLICAS:
            raise ValueError("MIN_REPLICAS must not exceed MAX_REPLICAS")
        if self.CLUSTER_MAX_QUEUED_REQUESTS == 0:
            raise ValueError("CLUSTER_MAX_QUEUED_REQUESTS must be -1 (no bound) or at least 1 (Serve's rule)")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.MAX_REPLICAS is not None
