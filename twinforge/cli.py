"""The ``twinforge`` command."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from twinforge import __version__

if TYPE_CHECKING:
    from twinforge.graphql.api_keys import ApiKeyStore
    from twinforge.runtime.twin_service import TwinService
    from twinforge.server import TwinServer

app = typer.Typer(
    name="twinforge",
    help=(
        "twinforge: a digital-twin graph server for factories. DTDL models describe asset "
        "types, a twin graph holds the plant, live asset actors hold telemetry and commands, "
        "and a GraphQL API serves it all.\n\n"
        "models: check DTDL model files before loading them. graph: import into and query "
        "the twin graph (embedded FalkorDB unless TWINFORGE_GRAPH_URL names a server). "
        "serve: run the server: live asset actors on Ray fed by MQTT and OPC UA, and the "
        "GraphQL API. demo: the sample factory, everything embedded. keys: API keys."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

models_app = typer.Typer(
    help="Work with DTDL model files (v2, v3 and v4).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

graph_app = typer.Typer(
    help="The twin graph: bulk import and queries. Uses TWINFORGE_GRAPH_URL "
    "(falkordb://, bolt://, neo4j://) or the embedded FalkorDB under TWINFORGE_DATA_DIR.",
    no_args_is_help=True,
)
app.add_typer(graph_app, name="graph")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"twinforge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """twinforge: a digital-twin graph server for factories."""


@models_app.command("validate")
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            metavar="PATH",
            help="Model files or directories (searched recursively for *.json). "
            "All of them are parsed together as one model set.",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
    allow_undefined_extensions: Annotated[
        bool,
        typer.Option(
            "--allow-undefined-extensions",
            help="Accept @context extensions the parser does not know instead of failing.",
        ),
    ] = False,
    max_dtdl_version: Annotated[
        int | None,
        typer.Option(
            "--max-dtdl-version",
            min=2,
            metavar="N",
            help="Reject models whose DTDL version is above N.",
        ),
    ] = None,
) -> None:
    """Validate DTDL models. Exit 0 when valid, 1 when invalid, 2 on a usage error."""
    from twinforge.model_files import collect_model_paths, validate_model_files

    files = collect_model_paths(paths)
    if not files:
        raise typer.BadParameter("no *.json model files found", param_hint="PATHS")
    report = validate_model_files(
        files,
        allow_undefined_extensions=allow_undefined_extensions,
        max_dtdl_version=max_dtdl_version,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        for line in report.text_lines():
            typer.echo(line)
    raise typer.Exit(0 if report.valid else 1)


@graph_app.command("import")
def graph_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help="An Azure Digital Twins import-job file (NDJSON: Header, Models, Twins, "
            "Relationships sections).",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON object.")
    ] = False,
) -> None:
    """Import models, twins and relationships. Exit 0 when every line was imported, 1 when
    some lines were refused (the report names each line and why)."""
    from twinforge.runtime.twin_service import import_ndjson

    with _twin_service() as service, file.open(encoding="utf-8") as lines:
        report = import_ndjson(service, lines)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(
            f"imported {report.models} models, {report.twins} twins, "
            f"{report.relationships} relationships; {len(report.errors)} lines refused"
        )
        for error in report.errors:
            typer.echo(
                f"{file}:{error.line}: [{error.section}] {error.item or ''} {error.code}: {error.message}"
            )
    raise typer.Exit(0 if report.ok else 1)


_OPS = {
    "!=": "ne",
    "<=": "lte",
    ">=": "gte",
    "^=": "startsWith",
    "~=": "contains",
    "=": "eq",
    "<": "lt",
    ">": "gt",
}


def _predicate(text: str) -> object:
    from twinforge.runtime.twin_service import Predicate

    for symbol, op in _OPS.items():
        name, found, raw = text.partition(symbol)
        if found:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw  # a bare word is a string
            return Predicate(name.strip(), op, value)  # type: ignore[arg-type]
    raise typer.BadParameter(f"{text!r}: write NAME OP VALUE with OP one of {' '.join(_OPS)}")


@graph_app.command("query")
def graph_query(
    model: Annotated[
        str | None, typer.Option(help="Twins of this model DTMI (and models extending it).")
    ] = None,
    exact_model: Annotated[
        bool, typer.Option("--exact-model", help="Leave out twins of models extending --model.")
    ] = False,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Property predicate, repeatable: 'temperature>50', 'state=running', "
            "'motor.speedRpm>=1000', 'name^=Pump' (starts with), 'name~=A' (contains).",
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Only twins reached from this twin id.")
    ] = None,
    along: Annotated[
        list[str] | None, typer.Option(help="Relationship names to follow (default: any).")
    ] = None,
    hops: Annotated[int, typer.Option(min=1, max=10, help="Most steps from --from.")] = 1,
    direction: Annotated[str, typer.Option(help="Follow relationships out, in or both.")] = "out",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    cypher: Annotated[
        str | None,
        typer.Option(
            help="A read-only Cypher query instead (admins); writing clauses are refused."
        ),
    ] = None,
) -> None:
    """Query twins; prints one JSON document per line."""
    from twinforge.runtime.twin_service import Traversal, TwinQuery, TwinServiceError

    with _twin_service() as service:
        try:
            if cypher is not None:
                for row in service.cypher(cypher):
                    typer.echo(json.dumps(row, default=str))
                return
            if direction not in ("out", "in", "both"):
                raise typer.BadParameter("out, in or both", param_hint="--direction")
            query = TwinQuery(
                model=model,
                include_submodels=not exact_model,
                where=tuple(_predicate(w) for w in where or []),  # type: ignore[misc]
                traversal=Traversal(start, tuple(along or ()), direction, 1, hops)  # type: ignore[arg-type]
                if start
                else None,
                limit=limit,
            )
            for twin in service.query_twins(query).items:
                typer.echo(json.dumps(twin))
        except TwinServiceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


Duration = Annotated[
    float | None,
    typer.Option(help="Stop after this many seconds (default: run until Ctrl-C)."),
]
Dashboard = Annotated[bool, typer.Option(help="Start the Ray dashboard.")]


@app.command("serve")
def serve(
    plant: Annotated[
        Path | None,
        typer.Option(
            "--import",
            exists=True,
            dir_okay=False,
            help="Import this ADT import-job NDJSON file (models, twins, relationships) first.",
        ),
    ] = None,
    duration: Duration = None,
    dashboard: Dashboard = True,
) -> None:
    """Run the server: the twin graph, an asset actor per twin on Ray, MQTT (and OPC UA)
    ingest, commands, the GraphQL API and metrics. Configured by TWINFORGE_* variables;
    every service not configured is embedded."""
    from twinforge.runtime.twin_service import import_ndjson
    from twinforge.server import TwinServer

    if plant is not None:
        with _twin_service() as service, plant.open(encoding="utf-8") as lines:
            report = import_ndjson(service, lines)
        typer.echo(
            f"imported {plant}: {report.models} models, {report.twins} twins, "
            f"{report.relationships} relationships, {len(report.errors)} lines refused"
        )
    server = TwinServer(dashboard=dashboard)
    _run(server.start, server.stop, lambda: server, duration)


@app.command("demo")
def demo(
    equipment: Annotated[
        int, typer.Option(min=1, max=2000, help="Equipment twins in the sample factory.")
    ] = 24,
    rate_hz: Annotated[
        float, typer.Option(min=0.1, max=50.0, help="Telemetry messages per machine per second.")
    ] = 1.0,
    duration: Duration = None,
    dashboard: Dashboard = True,
) -> None:
    """Run the sample factory with everything embedded: its DTDL models and twins, the
    plant simulator publishing telemetry over MQTT with faults that raise alarms, live
    asset actors, commands and the GraphQL API. Prints the URLs and an admin API key."""
    from twinforge.config import get_settings
    from twinforge.demo import Demo, start_demo

    started: dict[str, Demo] = {}

    def start() -> None:
        started["demo"] = start_demo(
            get_settings(), equipment=equipment, rate_hz=rate_hz, dashboard=dashboard
        )

    def stop() -> None:
        if "demo" in started:
            started["demo"].stop()

    def server() -> TwinServer | None:
        return started["demo"].server if "demo" in started else None

    def extra() -> None:
        found = started["demo"]
        typer.echo(f"Admin API key:  {found.admin_key}")
        typer.echo('                (send it as "Authorization: Bearer <key>"; in GraphiQL,')
        typer.echo("                 add it under Headers)")

    _run(start, stop, server, duration, extra)


def _run(
    start: Callable[[], object],
    stop: Callable[[], object],
    server: Callable[[], TwinServer | None],
    duration: float | None,
    extra: Callable[[], None] | None = None,
) -> None:
    """Start, print where everything is, run until Ctrl-C, SIGTERM or ``duration``."""
    import signal
    import time

    halt = {"now": False}
    running = None
    try:
        start()
        running = server()
        # After start: Ray installs a SIGTERM handler of its own that exits at once.
        signal.signal(signal.SIGTERM, lambda *_: halt.update(now=True))
        assert running is not None and running.endpoints is not None
        endpoints = running.endpoints
        typer.echo(f"GraphQL:        {endpoints.graphql}   (GraphiQL in a browser)")
        typer.echo(f"MQTT broker:    {endpoints.mqtt}")
        typer.echo(f"Metrics:        {endpoints.metrics}")
        typer.echo(f"Ray dashboard:  {endpoints.dashboard or 'off'}")
        token = Path.home() / ".ray" / "auth_token"
        if endpoints.dashboard and token.exists():
            typer.echo(f"                (Ray asks for the token in {token})")
        if endpoints.opcua:
            typer.echo(f"OPC UA:         {endpoints.opcua}")
        if extra is not None:
            extra()
        typer.echo(f"ready: {json.dumps(running.status())}", err=False)
        deadline = None if duration is None else time.monotonic() + duration
        while not halt["now"] and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        status = running.status() if running is not None and running.pipeline else {}
        stop()
        if status:
            typer.echo(f"stopped: {json.dumps(status)}")


keys_app = typer.Typer(
    help="API keys for the GraphQL API (stored hashed in TWINFORGE_DATA_DIR).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    role: Annotated[
        list[str], typer.Option(help="viewer, operator, engineer or admin (repeatable).")
    ],
) -> None:
    """Create an API key; prints its secret, which is shown only this once."""
    from twinforge.graphql.errors import BadInput

    try:
        with contextlib.closing(_key_store()) as store:
            issued = store.create(name, role)
    except BadInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(issued.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    with contextlib.closing(_key_store()) as store:
        for key in store.list():
            state = "revoked" if key.revoked else "active"
            typer.echo(f"{key.key_id}  {key.name}  {','.join(sorted(key.roles))}  {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key: requests with it fail from now on (a running server included)."""
    with contextlib.closing(_key_store()) as store:
        if not store.revoke(key_id):
            typer.echo(f"error: no key {key_id}", err=True)
            raise typer.Exit(1)


def _key_store() -> ApiKeyStore:
    from twinforge.config import get_settings
    from twinforge.graphql.api_keys import ApiKeyStore

    return ApiKeyStore.in_data_dir(get_settings().data_dir)


@contextlib.contextmanager
def _twin_service() -> Iterator[TwinService]:
    from twinforge.config import get_settings
    from twinforge.runtime.stores import open_graph_store
    from twinforge.runtime.twin_service import TwinService

    settings = get_settings()
    store = open_graph_store(settings.graph_url, settings.data_dir)
    try:
        yield TwinService(store)
    finally:
        store.close()
