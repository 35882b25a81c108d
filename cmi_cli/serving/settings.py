"""The server's configuration: one object, from CLI options or ``CMI_*`` environment variables.

A container runs ``cmi serve`` with no arguments and ``CMI_MODEL=/models/model.onnx`` etc.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cmi_cli.errors import UsageError

Backend = Literal["onnx", "torch"]


def available_cores() -> int:
    """Return the CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class ServeSettings(BaseSettings):
    """Settings of ``cmi serve``; each field ``x`` is also read from ``CMI_X``."""

    model_config = SettingsConfigDict(env_prefix="CMI_", extra="ignore", validate_default=True)

    model: Path = Field(description="ONNX model (served with ONNX Runtime) or checkpoint.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="Server processes.")
    backend: Backend | None = Field(None, description="onnx or torch; default: by file suffix.")
    max_upload_mb: float = Field(20.0, gt=0, description="Largest request body, in MB.")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest image, in pixels.")
    max_batch_images: int = Field(16, ge=1, description="Most images in one batch request.")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    api_key: SecretStr | None = Field(None, description="The API key itself (prefer *_env).")
    threads: int | None = Field(None, ge=1, description="Intra-op threads per worker.")
    max_concurrency: int | None = Field(None, ge=1, description="Images processed at once.")
    max_queue: int = Field(64, ge=0, description="Requests waiting beyond max_concurrency.")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of 503 answers.")
    batch_size: int = Field(1, ge=1, le=256, description="Micro-batch size; 1 turns it off.")
    batch_wait_ms: float = Field(5.0, ge=0, description="Longest wait to fill a micro-batch.")
    log_dir: str = Field("predictions", description="Prediction log folder, or gs://bucket/dir.")
    log_predictions: bool = True
    warmup_runs: int = Field(2, ge=0)
    reference: Path | None = Field(
        None, description="Drift reference features (default: the one beside the model)."
    )
    drift_window: int = Field(500, ge=2, description="Logged requests per drift check.")
    drift_interval_s: float = Field(
        300.0, ge=0, description="Seconds between background drift checks (0: off)."
    )
    drift_threshold: float = Field(
        0.2, ge=0, le=1, description="Drifted-feature share above which traffic drifts."
    )
    drift_min_samples: int = Field(30, ge=2, description="Fewest requests for a drift check.")
    nutrition_table: Path | None = Field(
        None, description="Nutrition table CSV for ?nutrition=true (default: the packaged one)."
    )
    plate_diameter_cm: float = Field(
        26.0, ge=5, le=100, description="Plate diameter assumed when a request gives none."
    )

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if self.api_key_env and not os.environ.get(self.api_key_env) and self.api_key is None:
            raise ValueError(f"environment variable {self.api_key_env} (the API key) is not set")
        return self

    @property
    def resolved_backend(self) -> Backend:
        """The backend to use: the configured one, or by suffix (``.ckpt``/``.pt`` -> torch)."""
        if self.backend is not None:
            return self.backend
        return "torch" if self.model.suffix in {".ckpt", ".pt", ".pth"} else "onnx"

    @property
    def key(self) -> str | None:
        """The API key requests must present, or None when the API is open."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None

    @property
    def max_upload_bytes(self) -> int:
        """The body limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def cores_per_worker(self) -> int:
        """The cores each worker process may use."""
        return max(1, available_cores() // self.workers)

    @property
    def concurrency(self) -> int:
        """Images processed at once per worker: by default one per core, at least two.

        Independent single-threaded calls use cores better than one call spread over all
        of them (no synchronisation inside each convolution), and two at once let one
        image's decoding and post-processing overlap another's inference. Micro-batching
        needs at least a batch's worth of requests in flight.
        """
        return self.max_concurrency or max(2, self.cores_per_worker, self.batch_size)

    @property
    def session_threads(self) -> int:
        """ONNX Runtime intra-op threads: the worker's cores shared out between its calls."""
        if self.threads:
            return self.threads
        if self.batch_size > 1:  # one batched call at a time: give it every core
            return self.cores_per_worker
        return max(1, self.cores_per_worker // self.concurrency)

    def to_env(self) -> dict[str, str]:
        """Return ``CMI_*`` variables that rebuild these settings in a worker process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"CMI_{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: object) -> ServeSettings:
    """Build settings from ``CMI_*`` variables with ``overrides`` (None values ignored) on top.

    Raises:
        UsageError: If a value is invalid or the model is not given.
    """
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServeSettings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        if first["type"] == "missing" and where == "model":
            raise UsageError(
                "no model to serve", hint="Pass MODEL (a .onnx or .ckpt) or set CMI_MODEL"
            ) from None
        raise UsageError(
            f"invalid serve setting {where}: {first['msg']}",
            hint=f"Fix --{where.replace('_', '-')} or CMI_{where.upper()}",
        ) from None
