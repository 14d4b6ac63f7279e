"""Settings of the registry, from environment variables and an optional .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PostgresDsn, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a registry worker; one frozen object built at start-up.

    Names follow what operators of the reference system already set
    (POSTGRES_POOL_MIN_SIZE, HEARTBEAT_INTERVAL_SECONDS, CONSUMER_GROUP, ...).
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        min_length=1,
        pattern=r"^[^,\s]+(,[^,\s]+)*$",
        description="Comma-separated host:port list of brokers.",
    )
    consumer_group: str = Field(
        "registry-app",
        description="Faust application id, hence the Kafka consumer group. Every "
        "worker of one registry shares it; two registries on one cluster need two.",
    )
    topic_partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        8,
        description="Partitions of every registry topic and table. Fixed once topics "
        "exist: it caps how many workers do useful work. Choose for the fleet you will "
        "have, not the one you have.",
    )
    topic_replication_factor: Annotated[int, Field(ge=1, le=32)] = Field(
        1,
        description="Replicas of every registry topic and changelog; use 3 on a "
        "production cluster.",
    )
    topic_prefix: str = Field(
        "registry",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Prefix of every topic name, e.g. registry.node-introspection.v1.",
    )

    # --- Consul ----------------------------------------------------------------------
    consul_host: str = "127.0.0.1"
    consul_port: Annotated[int, Field(ge=1, le=65535)] = 8500
    consul_scheme: str = Field("http", pattern="^https?$")
    consul_token: SecretStr | None = Field(
        None, description="ACL token with service:write on the catalog node below."
    )
    consul_catalog_node: str = Field(
        "registry-app-fleet",
        pattern=r"^[A-Za-z0-9-]{1,63}$",
        description="Consul catalog node that holds every fleet service. It must not "
        "be the name of a real Consul agent: an agent's anti-entropy would delete "
        "services it did not register itself.",
    )
    consul_catalog_node_address: str = "127.0.0.1"

    # --- PostgreSQL ------------------------------------------------------------------
    postgres_dsn: PostgresDsn = Field(
        PostgresDsn("postgresql://registry:registry@127.0.0.1:5432/registry"),
        description="asyncpg DSN of the durable registry.",
    )
    postgres_pool_min_size: Annotated[int, Field(ge=0, le=1000)] = 2
    postgres_pool_max_size: Annotated[int, Field(ge=1, le=1000)] = 10
    postgres_command_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    # --- Liveness --------------------------------------------------------------------
    heartbeat_interval_seconds: Annotated[float, Field(gt=0)] = Field(
        30.0,
        description="How often nodes heartbeat; the liveness timeout scales on it.",
    )
    liveness_timeout_seconds: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="Silence after which a node expires (default: 3 intervals).",
    )
    max_clock_skew_seconds: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="Events dated further than this ahead of the registry's clock are "
        "dead-lettered: one would pin its node's state until that time.",
    )
    expiry_tick_seconds: Annotated[float, Field(gt=0)] = Field(
        5.0,
        description="How often each worker checks its partitions for expired nodes. "
        "Expiry is judged by the time a partition has reached, not the wall clock.",
    )
    expiry_max_lag_messages: Annotated[int, Field(ge=0)] = Field(
        10_000,
        description="A tick read while its partition has more messages than this "
        "behind it expires nothing: the worker is catching up.",
    )
    expiry_guard_ratio: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5,
        description="Share of a partition's nodes expiring at once that is held as a "
        "suspected registry or network fault instead of applied.",
    )
    expiry_guard_min_nodes: Annotated[int, Field(ge=1)] = Field(
        10, description="The guard ignores partitions tracking fewer nodes than this."
    )
    expiry_guard_hold_seconds: Annotated[float, Field(gt=0)] = Field(
        600.0,
        description="How long a held mass expiry waits; if it is still due then, it is "
        "applied (a real mass outage) with an ERROR log.",
    )
    reintrospection_min_interval_seconds: Annotated[float, Field(ge=0)] = Field(
        60.0,
        description="Least time between two broadcast REQUEST_INTROSPECTION of a "
        "worker, and between two targeted requests to one node.",
    )
    heartbeat_flush_seconds: Annotated[float, Field(gt=0)] = Field(
        5.0, description="How often last-heartbeat times are written to PostgreSQL."
    )

    # --- Worker ----------------------------------------------------------------------
    data_dir: Path = Field(
        Path("registry-data"),
        description="Where the worker keeps its RocksDB tables; one per process.",
    )
    web_port: Annotated[int, Field(ge=1, le=65535)] = 6066
    web_host: str = "127.0.0.1"
    store: str = Field(
        "rocksdb://",
        description="Faust table store; rocksdb:// keeps state on disk (rocksdict).",
    )

    # The local servers' ports (scripts/servers.sh): when only these are set, the
    # registry follows them, so one set of variables serves the servers, the demo,
    # the tests and the CLI.
    kafka_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    consul_http_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    postgres_port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _follow_local_server_ports(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("kafka_port") and not data.get("kafka_bootstrap_servers"):
            data["kafka_bootstrap_servers"] = f"127.0.0.1:{data['kafka_port']}"
        if data.get("consul_http_port") and not data.get("consul_port"):
            data["consul_port"] = data["consul_http_port"]
        if data.get("postgres_port") and not data.get("postgres_dsn"):
            data["postgres_dsn"] = (
                f"postgresql://registry:registry@127.0.0.1:{data['postgres_port']}"
                "/registry"
            )
        return data

    @field_validator("postgres_pool_max_size")
    @classmethod
    def _max_not_below_min(cls, value: int, info) -> int:
        minimum = info.data.get("postgres_pool_min_size", 0)
        if value < minimum:
            raise ValueError(
                f"must be >= POSTGRES_POOL_MIN_SIZE ({minimum}), got {value}"
            )
        return value

    @property
    def liveness_timeout(self) -> float:
        """Seconds of silence after which a node expires."""
        if self.liveness_timeout_seconds is not None:
            return self.liveness_timeout_seconds
        return 3 * self.heartbeat_interval_seconds

    @property
    def kafka_broker_urls(self) -> list[str]:
        """Broker addresses in the kafka:// form Faust expects."""
        return [
            f"kafka://{host.strip()}"
            for host in self.kafka_bootstrap_servers.split(",")
        ]

    @property
    def postgres_dsn_str(self) -> str:
        return str(self.postgres_dsn)

    def topic_name(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


def load_settings() -> Settings:
    """Build the settings from the environment; the single place that reads it."""
    return Settings()
