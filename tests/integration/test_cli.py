"""Every `registry-app` subcommand, run as a user runs it, against a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]

REGISTRY_APP = Path(sys.executable).parent / "registry-app"
RUN = f"cli{uuid.uuid4().hex[:6]}"
PREFIX = f"sim-{RUN}-"


@pytest.fixture(scope="module")
def cli(registry_env, tmp_path_factory):
    """Runs registry-app with this module's settings, away from any .env file."""
    workdir = tmp_path_factory.mktemp("cli")

    def run(*args: str, timeout: float = 120, **env: str):
        return subprocess.run(
            [str(REGISTRY_APP), *args],
            env={**registry_env, **env},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


def one_line_error(result, code: int = 1) -> str:
    """The single line a failed command prints, after checking there is just one."""
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def simulated(cli) -> list[dict]:
    """Five nodes published with `simulate --once` and awaited with `nodes`."""
    result = cli("simulate", "--once", "--nodes", "5", "--run", RUN)
    assert result.returncode == 0, result
    assert f"published 5 introspection events (node ids {PREFIX}*)" in result.stdout

    result = cli("nodes", "--prefix", PREFIX, "--wait-for", "5", "--timeout", "60")
    assert result.returncode == 0, result
    listing = cli("nodes", "--prefix", PREFIX, "--json")
    assert listing.returncode == 0, listing
    return json.loads(listing.stdout)


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["worker", "servers", "simulate", "nodes", "show", "bench"]),
        (
            ["simulate"],
            [
                "--nodes",
                "--once",
                "--duration",
                "--heartbeat-interval",
                "--churn",
                "--crash-share",
                "--restart-after",
                "--bad-events",
                "--run",
                "--seed",
                "--json",
            ],
        ),
        (["nodes"], ["--prefix", "--status", "--type", "--tool", "--wait-for"]),
        (["show"], ["NODE_ID", "--json"]),
        (["servers"], ["start", "stop", "status", "kafka", "consul", "postgres"]),
        (["bench"], ["not built yet"]),
    ],
)
def test_help_of_each_command(cli, args, mentions):
    result = cli(*args, "--help")

    assert result.returncode == 0, result
    for mention in mentions:
        assert mention in result.stdout


def test_worker_help_is_fausts_own(cli):
    result = cli("worker", "--help")

    assert result.returncode == 0, result
    assert "Start worker instance" in result.stdout
    assert "--loglevel" in result.stdout


def test_servers_status(cli):
    # servers.sh reads its own port variables, which registry_env leaves out.
    ports = {
        name: os.environ[name]
        for name in ("KAFKA_PORT", "CONSUL_HTTP_PORT", "POSTGRES_PORT")
        if name in os.environ
    }

    result = cli("servers", "status", **ports)

    assert result.returncode == 0, result
    for server in ("kafka", "consul", "postgres"):
        assert f"{server}: running" in result.stdout


def test_simulate_once_and_nodes_wait_for_the_fleet(cli, simulated):
    result = cli("nodes", "--prefix", PREFIX)

    assert result.returncode == 0, result
    lines = [line for line in result.stdout.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 5
    assert all(" active " in line and " passing " in line for line in lines)
    assert "5 node(s) in PostgreSQL (5 active), 5 passing in Consul" in result.stdout


def test_nodes_json_and_filters(cli, simulated):
    assert len(simulated) == 5
    first = simulated[0]
    assert first["node_id"] == f"{PREFIX}000000"
    assert first["status"] == "active" and first["consul"] == "passing"
    assert first["tools"] and first["host"] and first["port"]

    def ids(*args: str) -> set[str]:
        result = cli("nodes", "--prefix", PREFIX, "--json", *args)
        assert result.returncode == 0, result
        return {node["node_id"] for node in json.loads(result.stdout)}

    assert len(ids("--status", "active")) == 5
    assert ids("--status", "expired") == set()
    assert ids("--type", first["node_type"]) == {
        n["node_id"] for n in simulated if n["node_type"] == first["node_type"]
    }
    tool = first["tools"][0]
    assert ids("--tool", tool) == {
        n["node_id"] for n in simulated if tool in n["tools"]
    }


def test_show_a_node(cli, simulated):
    node = simulated[1]

    result = cli("show", node["node_id"])

    assert result.returncode == 0, result
    for field in ("status", "active", "epoch", "last heartbeat", "tools", "metadata"):
        assert field in result.stdout
    assert "check            passing" in result.stdout
    for tool in node["tools"]:
        assert f"    {tool}" in result.stdout

    as_json = json.loads(cli("show", node["node_id"], "--json").stdout)
    assert as_json["postgres"]["node_epoch"] == node["node_epoch"]
    assert [t["tool"] for t in as_json["tools"]] == node["tools"]
    assert as_json["consul"]["ID"] == node["node_id"]
    assert [c["Status"] for c in as_json["checks"]] == ["passing"]


def test_show_an_unknown_node_is_one_line(cli):
    line = one_line_error(cli("show", "unknown-id"))

    assert "no node unknown-id" in line


def test_show_refuses_what_is_not_a_node_id(cli):
    line = one_line_error(cli("show", "not a node id"))

    assert "is not a node id" in line


def test_simulate_runs_a_fleet_and_prints_its_summary(cli, simulated):
    result = cli(
        "simulate",
        "--nodes",
        "5",
        "--run",
        f"{RUN}b",
        "--duration",
        "2.5",
        "--heartbeat-interval",
        "1",
        "--shutdown-at-end",
        "--json",
    )

    assert result.returncode == 0, result
    summary = json.loads(result.stdout)
    assert summary["introspections"] == 5 and summary["heartbeats"] >= 5
    assert summary["final_shutdowns"] == 5 and summary["send_errors"] == 0


@pytest.mark.parametrize(
    "args",
    [["nodes"], ["show", "x"], ["simulate", "--once"], ["worker", "-l", "info"]],
)
def test_an_invalid_setting_is_one_line_naming_it(cli, args):
    line = one_line_error(cli(*args, TOPIC_PARTITIONS="0"))

    assert "TOPIC_PARTITIONS" in line


@pytest.mark.parametrize(
    ("args", "env", "backend"),
    [
        (["nodes"], {"CONSUL_PORT": "1"}, "consul"),
        (["show", "x"], {"POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/x"}, "postgres"),
        (
            ["nodes"],
            {"POSTGRES_DSN": "postgresql://registry:registry@127.0.0.1/missing_db"},
            "postgres",
        ),
        (
            ["simulate", "--once"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "kafka",
        ),
    ],
)
def test_an_unreachable_backend_is_one_line(cli, args, env, backend):
    line = one_line_error(cli(*args, **env))

    assert line.startswith(f"Error: {backend}")


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--nodes", "0"],
        ["simulate", "--once", "--churn", "1"],
        ["nodes", "--status", "sleeping"],
        ["no-such-command"],
    ],
)
def test_a_usage_error_is_one_line(cli, args):
    line = one_line_error(cli(*args), code=2)

    assert "--help" in line


def test_bench_says_it_is_not_built_yet(cli):
    line = one_line_error(cli("bench"), code=2)

    assert "the benchmark suite is not built yet (issue 6)" in line
