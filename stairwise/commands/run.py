"""``stairwise run`` (a scenario for real) and ``stairwise server`` (the embedded vLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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

Threads = Annotated[
    int | None,
    typer.Option(
        help="Model threads of the local server (default: as its shipped profile was measured).",
        min=1,
    ),
]
Port = Annotated[int, typer.Option(help="Port on 127.0.0.1.")]
Isolate = Annotated[
    bool | None,
    typer.Option(
        "--isolate/--share",
        help="The local engine's model threads alone on the first cores, its API server and "
        "the runner on the last (the quiet testbed), or sharing every core (default: as its "
        "shipped profile was measured).",
        show_default=False,
    ),
]


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
    threads: Threads = None,
    isolate: Isolate = None,
    cold_cache: Annotated[
        bool, typer.Option("--cold-cache", help="Empty the vLLM prefix caches first.")
    ] = False,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            help="Measure each vLLM server's speed right before and after the run (5-40 s "
            "each on the local engine), kept in the trace.",
        ),
    ] = True,
    inject_network: Annotated[
        bool,
        typer.Option(
            "--inject-network",
            help="Route every server through a local proxy that adds the scenario's network "
            "latency to each request and streamed chunk.",
        ),
    ] = False,
    keep_text: Annotated[
        bool,
        typer.Option(
            "--keep-text",
            help="Keep the user prompts and every call's prompt and text in the trace (for "
            "`stairwise compare`; never keys or headers).",
        ),
    ] = False,
) -> None:
    """Execute a scenario for real against its servers and measure it like `simulate` predicts."""
    from stairwise import api

    with progress_bar("running", enabled=not as_json) as update:
        result = api.run(
            scenario,
            overrides,
            trace,
            local=local,
            threads=threads,
            isolate=isolate,
            cold_cache=cold_cache,
            inject_network=inject_network,
            progress=update,
            log=err_console.print,
            probe=probe,
            keep_text=keep_text,
        )
    emit(result.summary, as_json)
    if result.interrupted:
        err_console.print("interrupted: the summary covers the requests that completed")
        raise typer.Exit(130)


@server_app.command("start")
@guarded
def server_start(threads: Threads = None, port: Port = 8011, isolate: Isolate = None) -> None:
    """Start the local server (converting the packaged model once) and wait until healthy."""
    from live import local_server

    settings = local_server.settings_for(port=port, threads=threads, isolate=isolate)
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
