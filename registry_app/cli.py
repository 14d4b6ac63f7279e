"""The `registry-app` command: workers, local servers, a simulated fleet, node views."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from registry_app.backends.base import BackendError
from registry_app.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS_SCRIPT = REPO_ROOT / "scripts" / "servers.sh"

BENCH_NOT_BUILT = "the benchmark suite is not built yet (issue 6)"

_verbose = False  # set by the group's -v: unexpected errors keep their traceback


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = "_".join(str(part) for part in first["loc"]).upper()
        raise click.ClickException(
            f"invalid setting {variable}: {first['msg']}"
        ) from None


class _Stderr:
    """Writes to whatever sys.stderr is now, so logs go above rich's live display."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _OneLineErrors(click.Group):
    """Every failure ends the command with one line on stderr, never a traceback."""

    def main(self, args=None, prog_name=None, **extra):
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "registry-app"
            _fail(f"{exc.format_message()} (see {where} --help)", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        except BackendError as exc:
            _fail(str(exc))
        except KafkaError as exc:
            _fail(f"kafka: {exc}")
        except Exception as exc:
            if _verbose:
                raise
            _fail(f"{type(exc).__name__}: {exc} (-v shows where)")
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(cls=_OneLineErrors)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG; show tracebacks.")
@click.version_option(package_name="registry-app")
def main(verbose: bool) -> None:
    """A node registry for fleets of services (Kafka in, Consul and PostgreSQL out).

    Settings come from the environment and an optional .env file (see README.md);
    an invalid one stops every command with one line naming it.
    """
    global _verbose
    _verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=_Stderr(),
    )
    if not verbose:
        # aiokafka logs every connection attempt; what fails reaches us as an
        # exception or a delivery report, and becomes our one line or counter.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --- worker ------------------------------------------------------------------------


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker(context: click.Context) -> None:
    """Run a registry worker: `faust -A registry_app.app worker` with your options.

    Every option goes to Faust's worker command (`registry-app worker --help` shows
    them), after the settings are checked.
    """
    if "--help" not in context.args:
        _settings()  # a bad setting is one clear line here, not a Faust traceback
    command = [sys.executable, "-m", "faust", "-A", "registry_app.app", "worker"]
    os.execv(sys.executable, [*command, *context.args])


# --- servers -----------------------------------------------------------------------


@main.command()
@click.argument(
    "action", type=click.Choice(["install", "start", "status", "stop", "restart"])
)
@click.argument("servers", nargs=-1, type=click.Choice(["kafka", "consul", "postgres"]))
def servers(action: str, servers: tuple[str, ...]) -> None:
    """Install, start, stop or check the local Kafka, Consul and PostgreSQL.

    Runs scripts/servers.sh of this checkout: ACTION on SERVERS (default: all three).
    Ports come from KAFKA_PORT, CONSUL_HTTP_PORT and POSTGRES_PORT.
    """
    if not SERVERS_SCRIPT.exists():
        raise click.ClickException(
            "the local servers are managed from a checkout of registry-app "
            f"({SERVERS_SCRIPT} is missing)"
        )
    result = subprocess.run(
        ["bash", str(SERVERS_SCRIPT), action, *servers], check=False
    )
    sys.exit(result.returncode)


# --- simulate ----------------------------------------------------------------------


def _run_name(_context, _param, value: str | None) -> str | None:
    from registry_app.simulator import RUN_PATTERN

    if value is not None and not re.match(RUN_PATTERN, value):
        raise click.BadParameter(
            "1 to 40 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return value


@main.command()
@click.option(
    "--nodes",
    type=click.IntRange(1, 1_000_000),
    default=20,
    show_default=True,
    help="How many nodes to simulate.",
)
@click.option(
    "--run",
    default=None,
    callback=_run_name,
    help="Name of this fleet: node ids are sim-RUN-000000 and up. [default: random]",
)
@click.option(
    "--once",
    is_flag=True,
    help="Only publish every node's introspection, then exit (no heartbeats).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to run. [default: until Ctrl-C]",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds between a node's heartbeats. [default: HEARTBEAT_INTERVAL_SECONDS]",
)
@click.option(
    "--ramp-up",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds over which the nodes start, evenly.",
)
@click.option(
    "--churn",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Share of the fleet that stops per minute (0.1: 10% of the nodes).",
)
@click.option(
    "--crash-share",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of the stops that are crashes (no NODE_SHUTDOWN; the registry "
    "expires the node) rather than graceful shutdowns.",
)
@click.option(
    "--restart-after",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds after which a stopped node starts again, with a new epoch.",
)
@click.option(
    "--stay-down", is_flag=True, help="Stopped and crashed nodes never come back."
)
@click.option(
    "--bad-events",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Malformed events per second (the registry dead-letters them).",
)
@click.option(
    "--shutdown-at-end",
    is_flag=True,
    help="When the run ends, every running node sends NODE_SHUTDOWN (otherwise "
    "they fall silent and the registry expires them).",
)
@click.option(
    "--no-requests",
    is_flag=True,
    help="Do not answer the registry's REQUEST_INTROSPECTION.",
)
@click.option("--seed", default=None, help="Random seed. [default: the run name]")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout."
)
def simulate(
    nodes: int,
    run: str | None,
    once: bool,
    duration: float | None,
    heartbeat_interval: float | None,
    ramp_up: float,
    churn: float,
    crash_share: float,
    restart_after: float,
    stay_down: bool,
    bad_events: float,
    shutdown_at_end: bool,
    no_requests: bool,
    seed: str | None,
    as_json: bool,
) -> None:
    """Simulate a fleet of nodes in this process, sharing one Kafka producer.

    Nodes introspect, heartbeat (spread evenly over the interval), stop gracefully or
    crash and restart with a new epoch (--churn), and answer the registry's
    introspection requests. Live counts show while it runs (on a terminal, else a
    log line every 10 s) and a summary at the end; Ctrl-C ends the run.
    """
    from registry_app.simulator import Fleet, FleetConfig

    settings = _settings()
    if once:
        extras = {
            "--duration": duration is not None,
            "--churn": churn > 0,
            "--bad-events": bad_events > 0,
            "--ramp-up": ramp_up > 0,
            "--shutdown-at-end": shutdown_at_end,
        }
        given = [name for name, used in extras.items() if used]
        if given:
            raise click.UsageError(f"--once takes no {', '.join(given)}")
    interval = heartbeat_interval or settings.heartbeat_interval_seconds
    if interval >= settings.liveness_timeout:
        logging.getLogger(__name__).warning(
            "heartbeats every %.1fs reach a registry that expires nodes after %.1fs "
            "of silence: every node will expire",
            interval,
            settings.liveness_timeout,
        )
    config = FleetConfig(
        nodes=nodes,
        run=run,
        seed=seed,
        heartbeat_interval=interval,
        ramp_up=ramp_up,
        churn_per_minute=churn,
        crash_share=crash_share,
        restart_after=None if stay_down else restart_after,
        bad_events_per_second=bad_events,
        answer_requests=not no_requests,
        shutdown_at_end=shutdown_at_end,
    )
    fleet = Fleet(settings, config)
    summary = asyncio.run(_simulate(fleet, once=once, duration=duration))

    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif once:
        click.echo(
            f"published {summary['introspections']} introspection events "
            f"(node ids {fleet.prefix}*)"
        )
    else:
        from rich.console import Console

        from registry_app.simulator import summary_table

        Console().print(summary_table(summary))
    if summary["send_errors"]:
        raise click.ClickException(
            f"{summary['send_errors']} of {summary['messages']} messages were not "
            "delivered to Kafka (the log says why)"
        )


async def _simulate(fleet, *, once: bool, duration: float | None) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live

    from registry_app.simulator import FleetView

    async with fleet:
        if once:
            return await fleet.introspect()

        loop = asyncio.get_running_loop()

        def stop(signum: int) -> None:
            fleet.stop()
            loop.remove_signal_handler(signum)  # a second Ctrl-C interrupts at once

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)

        console = Console(stderr=True)
        if console.is_terminal:
            view = FleetView(fleet, duration)
            with Live(view, console=console, refresh_per_second=4, transient=True):
                return await fleet.simulate(duration)

        reporter = asyncio.create_task(_log_progress(fleet))
        try:
            return await fleet.simulate(duration)
        finally:
            reporter.cancel()


async def _log_progress(fleet, every: float = 10.0) -> None:
    """Without a terminal: the live counts as a log line every few seconds."""
    logger = logging.getLogger("registry_app.simulator")
    while True:
        await asyncio.sleep(every)
        stats = fleet.stats
        logger.info(
            "%d of %d nodes alive; %d introspections, %d heartbeats, %d shutdowns, "
            "%d crashes, %d restarts, %d bad events, %d send errors",
            fleet.running,
            len(fleet.nodes),
            stats.introspections,
            stats.heartbeats,
            stats.shutdowns,
            stats.crashes,
            stats.restarts,
            stats.bad_events,
            stats.send_errors,
        )


# --- nodes and show ----------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    ago = (datetime.now(UTC) - value).total_seconds()
    return f"{value.isoformat(timespec='seconds')} ({ago:.0f}s ago)"


@main.command(name="nodes")
@click.option("--prefix", default="", help="Only node ids starting with this.")
@click.option(
    "--status",
    type=click.Choice(["registering", "active", "expired", "deregistered"]),
    default=None,
    help="Only nodes with this status in PostgreSQL.",
)
@click.option("--type", "node_type", default=None, help="Only nodes of this type.")
@click.option("--tool", default=None, help="Only nodes offering this tool.")
@click.option(
    "--wait-for",
    type=click.IntRange(min=0),
    default=None,
    help="Wait until this many matching nodes are in both PostgreSQL and Consul.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds --wait-for waits.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object a node.")
def list_nodes(
    prefix: str,
    status: str | None,
    node_type: str | None,
    tool: str | None,
    wait_for: int | None,
    timeout: float,
    as_json: bool,
) -> None:
    """List the nodes in PostgreSQL, with their Consul health.

    The consul column is the node's check status, or MISSING when Consul has no
    service for it (as for a deregistered node).
    """
    from registry_app.inspect import registered_nodes

    settings = _settings()
    filtered = any(value is not None for value in (status, node_type, tool))

    async def read_until_complete():
        deadline = time.monotonic() + timeout
        while True:
            rows, services = await registered_nodes(
                settings, prefix=prefix, status=status, node_type=node_type, tool=tool
            )
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

    if as_json:
        listing = [
            {**_jsonable(row), "consul": services.get(row["node_id"])} for row in rows
        ]
        click.echo(json.dumps(listing, indent=2))
        return

    id_width = max([len("node id"), *(len(r["node_id"]) for r in rows)])
    click.echo(
        f"{'node id':<{id_width}} {'type':<13} {'version':<8} {'status':<12} "
        f"{'address':<21} {'consul':<8} tools"
    )
    for row in rows:
        address = f"{row['host']}:{row['port']}"
        click.echo(
            f"{row['node_id']:<{id_width}} {row['node_type']:<13} "
            f"{row['node_version']:<8} {row['status']:<12} {address:<21} "
            f"{services.get(row['node_id'], 'MISSING'):<8} {','.join(row['tools'])}"
        )
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    # Consul holds no status filter: compare it with PostgreSQL only when unfiltered.
    consul_only = (
        [] if filtered else sorted(set(services) - {r["node_id"] for r in rows})
    )
    passing = sum(1 for r in rows if services.get(r["node_id"]) == "passing")
    click.echo(
        f"\n{len(rows)} node(s) in PostgreSQL"
        + (f" ({by_status})" if by_status else "")
        + f", {passing} passing in Consul (catalog node {settings.consul_catalog_node})"
        + (f", {len(consul_only)} only in Consul" if consul_only else "")
    )


@main.command()
@click.argument("node_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(node_id: str, as_json: bool) -> None:
    """Show everything PostgreSQL and Consul hold about NODE_ID."""
    from registry_app.inspect import node_details

    settings = _settings()
    try:
        details = asyncio.run(node_details(settings, node_id))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if details is None:
        raise click.ClickException(
            f"no node {node_id} in PostgreSQL or in Consul "
            f"(catalog node {settings.consul_catalog_node})"
        )
    if as_json:
        click.echo(json.dumps(_jsonable(details), indent=2))
        return

    def line(name: str, value: Any) -> None:
        click.echo(f"  {name:<16} {value}")

    row = details["postgres"]
    click.echo(f"node {node_id}")
    click.echo("PostgreSQL")
    if row is None:
        click.echo("  (no row)")
    else:
        line("status", row["status"])
        line("type", row["node_type"])
        line("version", row["node_version"])
        line("epoch", row["node_epoch"])
        line("address", f"{row['host']}:{row['port']}")
        for name, url in sorted(row["endpoints"].items()):
            line(f"endpoint {name}", url)
        line("tags", ", ".join(row["tags"]) or "-")
        line("metadata", json.dumps(row["metadata"], sort_keys=True))
        line("last heartbeat", _when(row["last_heartbeat"]))
        line("last event", _when(row["last_event_time"]))
        line("first seen", _when(row["first_seen"]))
        line("updated", _when(row["updated_at"]))
        click.echo(f"  tools ({len(details['tools'])})")
        for tool in details["tools"]:
            version = f" v{tool['version']}" if tool["version"] else ""
            extra = f" {json.dumps(tool['attributes'])}" if tool["attributes"] else ""
            about = f" - {tool['description']}" if tool["description"] else ""
            click.echo(f"    {tool['tool']}{version}{about}{extra}")

    click.echo(f"Consul (catalog node {settings.consul_catalog_node})")
    service = details["consul"]
    if service is None:
        click.echo("  (no service)")
    else:
        line("service", service["Service"])
        line("address", f"{service['Address']}:{service['Port']}")
        line("tags", ", ".join(service.get("Tags") or []) or "-")
        line("meta", json.dumps(service.get("Meta") or {}, sort_keys=True))
    for check in details["checks"]:
        line("check", f"{check['Status']} ({check['Name']}: {check['Output']})")


# --- bench -------------------------------------------------------------------------


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (not built yet: issue 6)."""
    click.echo(f"Error: {BENCH_NOT_BUILT}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
