"""The `registry-app` command: run a worker, the local servers, a simulated fleet."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import click
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from registry_app.backends.base import BackendError
from registry_app.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS_SCRIPT = REPO_ROOT / "scripts" / "servers.sh"


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = "_".join(str(part) for part in first["loc"]).upper()
        raise click.ClickException(
            f"invalid setting {variable}: {first['msg']}"
        ) from None


class _OneLineErrors(click.Group):
    """Backend and network faults end the command with one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (BackendError, KafkaError, asyncpg.PostgresError, OSError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@click.group(cls=_OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG.")
def main(verbose: bool) -> None:
    """A node registry for fleets of services (Kafka in, Consul and PostgreSQL out)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker(context: click.Context) -> None:
    """Run a registry worker: `faust -A registry_app.app worker` with your options."""
    _settings()  # a bad setting is one clear line here, not a Faust traceback
    command = [sys.executable, "-m", "faust", "-A", "registry_app.app", "worker"]
    os.execv(sys.executable, [*command, *context.args])


@main.command()
@click.argument(
    "action", type=click.Choice(["install", "start", "status", "stop", "restart"])
)
@click.argument("servers", nargs=-1, type=click.Choice(["kafka", "consul", "postgres"]))
def servers(action: str, servers: tuple[str, ...]) -> None:
    """Install, start, stop or check the local Kafka, Consul and PostgreSQL."""
    if not SERVERS_SCRIPT.exists():
        raise click.ClickException(
            "the local servers are managed from a checkout of registry-app "
            f"({SERVERS_SCRIPT} is missing)"
        )
    result = subprocess.run(
        ["bash", str(SERVERS_SCRIPT), action, *servers], check=False
    )
    sys.exit(result.returncode)


@main.command()
@click.option(
    "--nodes", default=20, show_default=True, help="How many nodes to simulate."
)
@click.option(
    "--run", default=None, help="Name of this fleet (node ids start sim-RUN-)."
)
def simulate(nodes: int, run: str | None) -> None:
    """Publish the introspection of a simulated fleet, as nodes do on start-up."""
    from registry_app.simulator import Fleet

    settings = _settings()

    async def publish() -> str:
        async with Fleet(settings, nodes, run=run) as fleet:
            await fleet.introspect()
            return fleet.run

    fleet_run = asyncio.run(publish())
    click.echo(f"published {nodes} introspection events (node ids sim-{fleet_run}-*)")


@main.command(name="nodes")
@click.option("--prefix", default="", help="Only node ids starting with this.")
@click.option(
    "--wait-for",
    type=int,
    default=None,
    help="Wait until this many matching nodes are in both PostgreSQL and Consul.",
)
@click.option(
    "--timeout", default=120.0, show_default=True, help="Seconds --wait-for waits."
)
def list_nodes(prefix: str, wait_for: int | None, timeout: float) -> None:
    """List the nodes registered in PostgreSQL and Consul."""
    from registry_app.inspect import registered_nodes

    settings = _settings()

    async def read():
        rows, services = await registered_nodes(settings)
        rows = [r for r in rows if r["node_id"].startswith(prefix)]
        services = {k: v for k, v in services.items() if k.startswith(prefix)}
        return rows, services

    async def read_until_complete():
        deadline = time.monotonic() + timeout
        while True:
            rows, services = await read()
            in_both = {r["node_id"] for r in rows} & set(services)
            if wait_for is None or len(in_both) >= wait_for:
                return rows, services
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"after {timeout:.0f}s only {len(in_both)} of {wait_for} node(s) "
                    f"are in both backends ({len(rows)} in PostgreSQL, "
                    f"{len(services)} in Consul)"
                )
            await asyncio.sleep(0.5)

    rows, services = asyncio.run(read_until_complete())

    click.echo(
        f"{'node id':<24} {'type':<13} {'version':<8} {'status':<9} "
        f"{'address':<18} {'consul':<8} tools"
    )
    for row in rows:
        service = services.get(row["node_id"])
        in_consul = service or "MISSING"
        address = f"{row['host']}:{row['port']}"
        click.echo(
            f"{row['node_id']:<24} {row['node_type']:<13} {row['node_version']:<8} "
            f"{row['status']:<9} {address:<18} {in_consul:<8} {row['tools']}"
        )
    only_in_consul = set(services) - {r["node_id"] for r in rows}
    click.echo(
        f"\n{len(rows)} node(s) in PostgreSQL, {len(services)} service(s) in Consul"
        f" (catalog node {settings.consul_catalog_node})"
        + (f", {len(only_in_consul)} only in Consul" if only_in_consul else "")
    )


if __name__ == "__main__":
    main()
