"""Configuration: one typed dataclass, read from the environment and then from flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from events.codec import DEFAULT_MAX_FUTURE_SKEW_MS

DEFAULT_DATA_DIR = "./fieldstream-data"


@dataclass(frozen=True, slots=True)
class Config:
    """Where the log and the stores live, and the knobs the stages share.

    ``kafka`` set means scale-out mode (a Kafka-protocol broker at ``host:port``); otherwise
    the embedded log in ``data_dir``. ``db`` is a database URL (``postgresql://...``) for the
    stores in scale-out mode; ``None`` means SQLite files in ``data_dir``.
    """

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    kafka: str | None = None
    db: str | None = None
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
    batch_size: int = 20_000
    lateness_ms: int = 15 * 60_000
    """How late an event may arrive and still be applied by its event time."""
    geofence_m: float = 75.0
    """Radius around a site inside which a ping counts as an arrival."""
    roads: Path | None = None
    """The road graph (.npz) of the region; None: the committed Andorra graph."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``FIELDSTREAM_DATA_DIR``, ``FIELDSTREAM_KAFKA``, ``FIELDSTREAM_DB``,
        ``FIELDSTREAM_MAX_FUTURE_SKEW_S``, ``FIELDSTREAM_BATCH_SIZE``,
        ``FIELDSTREAM_LATENESS_S``, ``FIELDSTREAM_GEOFENCE_M`` and ``FIELDSTREAM_ROADS``."""
        env = os.environ if env is None else env
        config = cls(data_dir=Path(env.get("FIELDSTREAM_DATA_DIR", DEFAULT_DATA_DIR)))
        if kafka := env.get("FIELDSTREAM_KAFKA"):
            config = replace(config, kafka=kafka)
        if db := env.get("FIELDSTREAM_DB"):
            config = replace(config, db=db)
        if skew := env.get("FIELDSTREAM_MAX_FUTURE_SKEW_S"):
            config = replace(config, max_future_skew_ms=int(float(skew) * 1000))
        if batch := env.get("FIELDSTREAM_BATCH_SIZE"):
            config = replace(config, batch_size=int(batch))
        if lateness := env.get("FIELDSTREAM_LATENESS_S"):
            config = replace(config, lateness_ms=int(float(lateness) * 1000))
        if radius := env.get("FIELDSTREAM_GEOFENCE_M"):
            config = replace(config, geofence_m=float(radius))
        if roads := env.get("FIELDSTREAM_ROADS"):
            config = replace(config, roads=Path(roads))
        return config

    @property
    def mode(self) -> str:
        return "kafka" if self.kafka else "embedded"

    def describe(self) -> str:
        """Where things live, for a human."""
        if self.kafka:
            return f"Kafka at {self.kafka}" + (f", database {self.db}" if self.db else "")
        return f"embedded log in {self.data_dir}"
