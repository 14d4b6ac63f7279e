"""Settings from the environment: defaults, the local-server ports, clear refusals."""

import pytest
from pydantic import ValidationError

from registry_app.settings import Settings

SERVER_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_PORT",
    "CONSUL_PORT",
    "CONSUL_HTTP_PORT",
    "POSTGRES_DSN",
    "POSTGRES_PORT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SERVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_point_at_the_local_servers():
    settings = Settings(_env_file=None)

    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.consul_port == 8500
    assert str(settings.postgres_dsn).endswith("@127.0.0.1:5432/registry")
    assert settings.liveness_timeout == 90.0


def test_the_local_server_ports_move_the_registry_with_them(monkeypatch):
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("CONSUL_HTTP_PORT", "18500")
    monkeypatch.setenv("POSTGRES_PORT", "15432")

    settings = Settings(_env_file=None)

    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.consul_port == 18500
    assert str(settings.postgres_dsn) == (
        "postgresql://registry:registry@127.0.0.1:15432/registry"
    )


def test_explicit_addresses_win_over_the_local_server_ports(monkeypatch):
    monkeypatch.setenv("KAFKA_PORT", "19092")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")

    settings = Settings(_env_file=None)

    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.kafka_broker_urls == [
        "kafka://kafka-1:9092",
        "kafka://kafka-2:9092",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "", "at least 1 character"),
        ("TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("POSTGRES_POOL_MAX_SIZE", "abc", "valid integer"),
        ("CONSUL_SCHEME", "ftp", "pattern"),
    ],
)
def test_an_invalid_setting_is_refused_naming_it(
    monkeypatch, variable, value, complaint
):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)

    error = refused.value.errors()[0]
    assert error["loc"] == (variable.lower(),)
    assert complaint in error["msg"]


def test_pool_maximum_below_minimum_is_refused(monkeypatch):
    monkeypatch.setenv("POSTGRES_POOL_MIN_SIZE", "20")
    monkeypatch.setenv("POSTGRES_POOL_MAX_SIZE", "5")

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)

    assert "POSTGRES_POOL_MIN_SIZE (20)" in str(refused.value)
