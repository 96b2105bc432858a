"""``stairwise run`` (a scenario for real) and ``stairwise server`` (the embedded vLLM)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.scenario import Scenario, VllmServer
from stairwise.app import (
    JsonFlag,
    Overrides,
    TraceOption,
    app,
    emit,
    err_console,
    guarded,
    progress_bar,
)

server_app = typer.Typer(help="The embedded local vLLM server (CPU build, SmolLM2-135M).")
app.add_typer(server_app, name="server")

Threads = Annotated[int, typer.Option(help="Model threads (2 = both cores).", min=1)]
Port = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]


def use_local_server(scenario: Scenario, threads: int = 2, port: int = 8011) -> Scenario:
    """Point every vLLM server of the scenario at the embedded local server (started if needed)."""
    from live import local_server

    was_running = local_server.running() is not None
    state = local_server.start(
        local_server.ServerSettings(port=port, threads=threads), log=err_console.print
    )
    if not was_running:
        err_console.print(
            "the local vLLM server keeps running for the next run: `stairwise server stop` ends it"
        )
    servers: dict[str, Any] = {}
    for name, server in scenario.servers.items():
        if isinstance(server, VllmServer):
            server = server.model_copy(
                update={"endpoint": state.settings.url, "model": local_server.MODEL_NAME}
            )
        servers[name] = server
    return scenario.model_copy(update={"servers": servers})


def through_latency_proxies(scenario: Scenario, stack: contextlib.ExitStack) -> Scenario:
    """Start one latency proxy per server and point the scenario at them."""
    from live.proxy import ProxyConfig, free_port, start_proxy

    servers: dict[str, Any] = {}
    for index, (name, server) in enumerate(scenario.servers.items()):
        if server.endpoint is None:
            servers[name] = server
            continue
        config = ProxyConfig(
            upstream=server.endpoint.rstrip("/").removesuffix("/v1"),
            latency=server.network or scenario.network.latency,
            seed=scenario.seed + index,
        )
        url = stack.enter_context(start_proxy(config, free_port()))
        servers[name] = server.model_copy(update={"endpoint": url})
    return scenario.model_copy(update={"servers": servers})


@app.command()
@guarded
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    overrides: Overrides = None,
    as_json: JsonFlag = False,
    trace: TraceOption = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run on the embedded local vLLM (started if needed).")
    ] = False,
    threads: Threads = 2,
    cold_cache: Annotated[
        bool, typer.Option("--cold-cache", help="Empty the vLLM prefix caches first.")
    ] = False,
    inject_network: Annotated[
        bool,
        typer.Option(
            "--inject-network",
            help="Route every server through a local proxy that adds the scenario's network "
            "latency to each request and streamed chunk.",
        ),
    ] = False,
) -> None:
    """Execute a scenario for real against its servers and measure it like `simulate` predicts."""
    from live.runner import LiveRunner
    from sim import load_scenario

    loaded = load_scenario(scenario, overrides or [])
    if local:
        loaded = use_local_server(loaded, threads)
    if cold_cache or local:
        loaded = loaded.model_copy(
            update={"live": loaded.live.model_copy(update={"cold_cache": True})}
        )
    with contextlib.ExitStack() as proxies:
        if inject_network:
            loaded = through_latency_proxies(loaded, proxies)
        runner = LiveRunner(loaded, trace_path=trace)
        with progress_bar("running", enabled=not as_json) as update:
            result = asyncio.run(runner.run(progress=update))
    emit(result.summary, as_json)
    if result.interrupted:
        err_console.print("interrupted: the summary covers the requests that completed")
        raise typer.Exit(130)


@server_app.command("start")
@guarded
def server_start(threads: Threads = 2, port: Port = 8011) -> None:
    """Start the local server (converting the packaged model once) and wait until healthy."""
    from live import local_server

    settings = local_server.ServerSettings(port=port, threads=threads)
    state = local_server.start(settings, log=err_console.print)
    typer.echo(f"running: pid {state.pid}, {state.settings.url} (model {local_server.MODEL_NAME})")


@server_app.command("stop")
@guarded
def server_stop() -> None:
    """Stop the local server and remove its temporary files."""
    from live import local_server

    typer.echo("stopped" if local_server.stop() else "not running")


@server_app.command("status")
@guarded
def server_status() -> None:
    """Is the local server running, where, and with which settings."""
    from live import local_server

    state = local_server.running()
    if state is None:
        typer.echo("not running")
        raise typer.Exit(1)
    health = "healthy" if local_server.healthy(state.settings.url) else "starting or unhealthy"
    typer.echo(f"running ({health}): pid {state.pid}, {state.settings.url}, {state.settings}")
