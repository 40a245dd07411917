"""The ``twinforge`` command."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from twinforge import __version__

if TYPE_CHECKING:
    from twinforge.audit import AuditTrail
    from twinforge.auth.api_keys import ApiKeyStore
    from twinforge.auth.devices import DeviceStore
    from twinforge.runtime.twin_service import TwinService
    from twinforge.server import TwinServer
    from twinforge.twin_models import Interface

app = typer.Typer(
    name="twinforge",
    help=(
        "twinforge: a digital-twin graph server for factories. DTDL models describe asset "
        "types, a twin graph holds the plant, live asset actors hold telemetry and commands, "
        "and a GraphQL API serves it all.\n\n"
        "models: check DTDL model files before loading them. graph: import into and query "
        "the twin graph (embedded FalkorDB unless TWINFORGE_GRAPH_URL names a server). "
        "serve: run the server: live asset actors on Ray fed by MQTT and OPC UA, and the "
        "GraphQL API. demo: the sample factory, everything embedded. keys: API keys. "
        "tokens: JWTs. "
        "devices: MQTT credentials of plant devices. audit: verify and show the audit trail. "
        "physics: build, check and what-if FMUs. ml: train and promote the twins' anomaly "
        "models."
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
    help="The twin graph: bulk import and queries.\n\n"
    "Uses TWINFORGE_GRAPH_URL (falkordb://, bolt://, neo4j://) or the embedded FalkorDB "
    "under TWINFORGE_DATA_DIR: the one a running twinforge serve or demo holds, else one "
    "started for the command.",
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
    from twinforge.twin_models.files import collect_model_paths, validate_model_files

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
    """Import an import-job file: its models, twins and relationships.

    Exit 0 when every line was imported, 1 when some lines were refused (the
    report names each line and why). Beside a running twinforge serve or demo,
    this writes into the graph that server holds.
    """
    with file.open(encoding="utf-8") as lines:
        try:
            empty = not any(line.strip() for line in lines)
        except UnicodeDecodeError as exc:
            _fail(f"{file} is not UTF-8 text ({exc.reason}); an import file is NDJSON")
        if empty:
            _fail(
                f"{file} is empty: an import file starts with "
                '{"Section": "Header"}, then holds Models, Twins and Relationships sections '
                "(twinforge graph sample-plant writes one)"
            )
    from twinforge.runtime.twin_service import import_ndjson

    with _graph_service() as service, file.open(encoding="utf-8") as lines:
        try:
            report = import_ndjson(service, lines)
        except UnicodeDecodeError as exc:
            _fail(f"{file} is not UTF-8 text ({exc.reason}); import stopped there")
        shared = getattr(service.store, "shared", None)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(report.summary())
        for error in report.errors:
            where = f"[{error.section}] " if error.section else ""
            item = f"{error.item} " if error.item else ""
            typer.echo(f"{file}:{error.line}: {where}{item}{error.code}: {error.message}")
    if shared is not None and (report.models or report.twins or report.relationships):
        typer.echo(
            f"note: imported into the graph of the running twinforge (process {shared.pid}); "
            "it loaded models and started live twins when it started, so restart it to serve "
            "new models and run the new twins",
            err=True,
        )
    raise typer.Exit(0 if report.ok else 1)


@graph_app.command("sample-plant")
def graph_sample_plant(
    file: Annotated[
        Path | None,
        typer.Argument(
            dir_okay=False,
            metavar="FILE",
            help="Where to write it (replaced if it exists); standard output when left out or -.",
            show_default=False,
        ),
    ] = None,
    equipment: Annotated[
        int, typer.Option(min=1, max=2000, help="Equipment twins in the sample factory.")
    ] = 24,
) -> None:
    """Write the sample factory (the one twinforge demo runs) as an import-job file.

    Its models, twins and relationships in the Azure Digital Twins import-job
    format, for twinforge graph import and twinforge serve --import.
    """
    from twinforge.config import get_settings
    from twinforge.demo import Demo  # the one way to the simulated plant (import contracts)

    plant = Demo(get_settings(), equipment=equipment).layout  # built, never started
    text = plant.to_import_ndjson()
    if not text.endswith("\n"):
        text += "\n"
    if file is None or str(file) == "-":
        typer.echo(text, nl=False)
        return
    try:
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {file}: {exc.strerror or exc}")
    typer.echo(
        f"wrote {file}: {len(plant.models)} models, {len(plant.twins)} twins, "
        f"{len(plant.relationships)} relationships (import it with: twinforge graph import {file})"
    )


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
        str | None,
        typer.Option(
            help="Twins of this model DTMI (and models extending it); quote it, as in "
            "--model 'dtmi:com:example:Pump;1': the shell ends a command at ;.",
        ),
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
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="Most twins to print, in twin id order.")
    ] = 100,
    cypher: Annotated[
        str | None,
        typer.Option(help="A read-only Cypher query instead; writing clauses are refused."),
    ] = None,
) -> None:
    """Query twins; prints one JSON document per line.

    Works beside a running twinforge serve or demo, on the graph that server holds.
    """
    from twinforge.runtime.twin_service import NotFound, Traversal, TwinQuery, TwinServiceError
    from twinforge.twin_models.dtmi import is_valid_dtmi

    if direction not in ("out", "in", "both"):
        raise typer.BadParameter("out, in or both", param_hint="--direction")
    if model is not None and not is_valid_dtmi(model):
        raise typer.BadParameter(
            f"{model!r} is not a DTMI (dtmi:<segment>[:<segment>...];<version>)",
            param_hint="--model",
        )
    with _graph_service() as service:
        try:
            if cypher is not None:
                for row in service.cypher(cypher):
                    typer.echo(json.dumps(row, default=str))
                return
            if model is not None and service.models.find(model) is None:
                _fail(_unknown_model(model, [m.id for m in service.models.list()]))
            if start is not None:
                service.get_twin(start)  # NotFound names it
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
        except NotFound as exc:
            _fail(f"--from: {exc}" if start is not None else str(exc))
        except TwinServiceError as exc:
            _fail(str(exc))


def _unknown_model(model: str, known: list[str]) -> str:
    message = f"--model: no model {model} in the graph"
    versioned = sorted(k for k in known if k.partition(";")[0] == model.partition(";")[0])
    if versioned and ";" not in model:
        return (
            f"{message}; did you mean {versioned[-1]!r}? Quote it: the shell ends a command "
            "at ; (and runs what follows as another)"
        )
    if not known:
        return f"{message}, which holds no models yet (twinforge graph import FILE adds some)"
    return (
        f"{message} (twinforge graph query --cypher 'MATCH (m:Model) RETURN m.model_id' lists them)"
    )


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
    """Run the server: the twin graph, live assets on Ray, ingest, commands and GraphQL.

    The twin graph, an asset actor per twin on Ray, MQTT (and OPC UA) ingest,
    commands, the GraphQL API and metrics. Configured by TWINFORGE_* variables;
    every service not configured is embedded.
    """
    from twinforge.runtime.twin_service import import_ndjson
    from twinforge.server import TwinServer

    if plant is not None:
        with _twin_service() as service, plant.open(encoding="utf-8") as lines:
            report = import_ndjson(service, lines)
        typer.echo(f"{plant}: {report.summary()}")
    _run(TwinServer(dashboard=dashboard), duration)


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
    """Run the sample factory with everything embedded; prints the URLs and an admin key.

    Its DTDL models and twins, the plant simulator publishing telemetry over MQTT
    with faults that raise alarms, live asset actors, commands and the GraphQL API.
    """
    from twinforge.config import get_settings
    from twinforge.demo import Demo

    _run(Demo(get_settings(), equipment=equipment, rate_hz=rate_hz, dashboard=dashboard), duration)


def _run(server: TwinServer, duration: float | None) -> None:
    """Start, print where everything is, run until Ctrl-C, SIGTERM or ``duration``."""
    import signal
    import time

    halt = {"now": False}
    try:
        server.start()
        # After start: Ray installs a SIGTERM handler of its own that exits at once.
        signal.signal(signal.SIGTERM, lambda *_: halt.update(now=True))
        for line in server.banner():
            typer.echo(line)
        typer.echo(f"ready: {json.dumps(server.status())}")
        deadline = None if duration is None else time.monotonic() + duration
        while not halt["now"] and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if status := server.status():  # the counts once MQTT has disconnected
            typer.echo(f"stopped: {_stop_line(status)}")


def _stop_line(status: dict[str, int]) -> str:
    """``received 2904, accepted 2901, rejected 0, left for redelivery 3``: every message
    received is accepted, rejected (dead-lettered) or left for the broker to redeliver."""
    names = ("received", "accepted", "rejected", "left_for_redelivery", "dead_letters_dropped")
    return ", ".join(f"{name.replace('_', ' ')} {status[name]}" for name in names)


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
    expires_in: Annotated[
        str | None,
        typer.Option(help="How long the key lives: 90m, 12h, 30d, 2w. Default: until revoked."),
    ] = None,
) -> None:
    """Create an API key; prints its secret, which is shown only this once."""
    from datetime import UTC, datetime

    from twinforge.auth.durations import parse_duration
    from twinforge.auth.errors import InvalidInput

    try:
        expires = None
        if expires_in is not None:
            expires = datetime.now(UTC) + parse_duration(expires_in, field="--expires-in")
        with contextlib.closing(_key_store()) as store:
            issued = store.create(name, role, expires=expires)
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _audit(
        "key.create",
        f"key:{issued.key_id}",
        {"name": name, "roles": sorted(role), "expires_in": expires_in},
    )
    typer.echo(issued.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never their secrets)."""
    with contextlib.closing(_key_store()) as store:
        for key in store.list():
            state = "revoked" if key.revoked else "expired" if key.expired() else "active"
            until = f"  until {key.expires:%Y-%m-%dT%H:%M:%SZ}" if key.expires else ""
            roles = ",".join(sorted(key.roles))
            typer.echo(f"{key.key_id}  {key.name}  {roles}  {state}{until}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key: requests with it fail from now on (a running server included)."""
    with contextlib.closing(_key_store()) as store:
        revoked = store.revoke(key_id)
    _revoked("key.revoke", f"key:{key_id}", revoked, f"no key {key_id}")


def _revoked(action: str, target: str, revoked: bool, missing: str) -> None:
    """Audit a revocation; exit 1 saying ``missing`` when there was nothing to revoke."""
    _audit(action, target, outcome="ok" if revoked else "not found")
    if not revoked:
        typer.echo(f"error: {missing}", err=True)
        raise typer.Exit(1)


def _key_store() -> ApiKeyStore:
    from twinforge.auth.api_keys import ApiKeyStore
    from twinforge.config import get_settings

    return ApiKeyStore.in_data_dir(get_settings().data_dir)


tokens_app = typer.Typer(
    help="JWT bearer tokens of the GraphQL API (issued ones listed by jti in TWINFORGE_DATA_DIR).",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("revoke")
def tokens_revoke(jti: Annotated[str, typer.Argument(help="The token's jti claim.")]) -> None:
    """Revoke a token: requests and open subscriptions with it fail from now on (a
    running server included)."""
    from twinforge.auth.token_revocations import TokenRevocations
    from twinforge.config import get_settings

    with contextlib.closing(TokenRevocations.in_data_dir(get_settings().data_dir)) as tokens:
        revoked = tokens.revoke(jti)
    _revoked("token.revoke", f"token:{jti}", revoked, f"no live token {jti}")


devices_app = typer.Typer(
    help="Embedded-broker MQTT credentials of plant devices (stored hashed in TWINFORGE_DATA_DIR).",
    no_args_is_help=True,
)
app.add_typer(devices_app, name="devices")


@devices_app.command("create")
def devices_create(
    name: Annotated[str, typer.Argument(help="Which device the credential is for (unique).")],
    twin: Annotated[list[str], typer.Option(help="A twin id the device reports for (repeatable).")],
) -> None:
    """Create a device credential; prints its MQTT username and its password, which is
    shown only this once. The device's client id must be the username or start with
    the username and "-"."""
    from twinforge.auth.errors import InvalidInput

    try:
        with contextlib.closing(_device_store()) as store:
            issued = store.create(name, twin)
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _audit(
        "device.create",
        f"device:{issued.credential.id}",
        {"name": name, "twins": sorted(issued.credential.twins)},
    )
    typer.echo(f"username: {issued.credential.id}")
    typer.echo(f"password: {issued.password}")


@devices_app.command("list")
def devices_list() -> None:
    """List device credentials (never their passwords)."""
    with contextlib.closing(_device_store()) as store:
        for credential in store.list():
            state = "revoked" if credential.revoked else "active"
            twins = ",".join(sorted(credential.twins)) or "-"
            typer.echo(f"{credential.id}  {credential.name}  {credential.kind}  {twins}  {state}")


@devices_app.command("revoke")
def devices_revoke(
    credential_id: Annotated[str, typer.Argument(help="The credential's id (its username).")],
) -> None:
    """Revoke a device credential: a running embedded broker closes its connections
    within seconds and refuses it from then on."""
    with contextlib.closing(_device_store()) as store:
        revoked = store.revoke(credential_id)
    _revoked(
        "device.revoke",
        f"device:{credential_id}",
        revoked,
        f"no active device credential {credential_id}",
    )


def _device_store() -> DeviceStore:
    from twinforge.auth.devices import DeviceStore
    from twinforge.config import get_settings

    return DeviceStore.in_data_dir(get_settings().data_dir)


audit_app = typer.Typer(
    help="The hash-chained audit trail of security-relevant acts in TWINFORGE_DATA_DIR.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

_DataDirOption = Annotated[
    Path | None, typer.Option(help="The data dir holding the trail. Default: TWINFORGE_DATA_DIR.")
]


@audit_app.command("verify")
def audit_verify(data_dir: _DataDirOption = None) -> None:
    """Walk the chain; exits 1 naming the first record that was changed, deleted,
    inserted or reordered."""
    from twinforge.audit.log import FILE_NAME
    from twinforge.config import get_settings

    path = (data_dir or get_settings().data_dir) / FILE_NAME
    if not path.is_file():
        # Opening would create an empty trail, which verifies: say it is missing instead.
        typer.echo(f"audit: no audit trail at {path}", err=True)
        raise typer.Exit(1)
    with contextlib.closing(_audit_trail(data_dir)) as trail:
        count, broken = trail.verify()
    if broken is not None:
        typer.echo(f"audit: record {broken.seq} is broken: {broken.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit: {count} records, chain intact")


@audit_app.command("show")
def audit_show(
    data_dir: _DataDirOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many records.")] = 20,
) -> None:
    """Print the most recent records, oldest first, one JSON line each."""
    from twinforge.audit.chain import canonical

    with contextlib.closing(_audit_trail(data_dir)) as trail:
        records = trail.query(limit=limit)
    for record in reversed(records):
        typer.echo(canonical(record.as_json()))


def _audit_trail(data_dir: Path | None = None) -> AuditTrail:
    from twinforge.audit import AuditTrail
    from twinforge.config import get_settings

    settings = get_settings()
    return AuditTrail.open(data_dir or settings.data_dir, settings)


def _audit(
    action: str, target: str, details: dict[str, Any] | None = None, *, outcome: str = "ok"
) -> None:
    """Record what this command did, as the operating-system user running it."""
    from twinforge.audit import LocalActor

    with contextlib.closing(_audit_trail()) as trail:
        trail.record(LocalActor.cli(), action, target, outcome, details)


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


def _fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` (its first line) on stderr and exit with ``code``."""
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _graph_service() -> Iterator[TwinService]:
    """The twin service for ``twinforge graph ...``: on TWINFORGE_GRAPH_URL, or on the
    embedded FalkorDB in the data dir, the running server's own when a twinforge serve or
    demo holds it (else one started for this command). A graph that cannot be reached is
    one line on stderr and exit status 1, never a traceback."""
    from twinforge.config import get_settings
    from twinforge.runtime.stores import GraphStoreError, open_graph_store
    from twinforge.runtime.twin_service import TwinService

    settings = get_settings()
    try:
        store = open_graph_store(settings.graph_url, settings.data_dir, share_running=True)
    except (GraphStoreError, ValueError) as exc:
        _fail(str(exc))
    try:
        yield TwinService(store)
    except GraphStoreError as exc:  # the database went away mid-command
        _fail(f"the graph database failed: {exc}")
    finally:
        store.close()


# -- physics ------------------------------------------------------------------------

physics_app = typer.Typer(
    help="FMU physics: build FMUs, check a physics configuration, run what-if simulations.\n\n"
    "build compiles an FMU's C sources for this platform, check fits a physics configuration "
    "to its FMUs and DTDL models, simulate asks a running server to run a twin's FMU ahead. "
    "Built FMUs are kept in TWINFORGE_FMU_CACHE (default ~/.cache/twinforge/fmus), each "
    "built once per machine.",
    no_args_is_help=True,
)
app.add_typer(physics_app, name="physics")


@physics_app.command("build")
def physics_build(
    source: Annotated[
        Path | None,
        typer.Argument(
            exists=True,
            metavar="SOURCE",
            help="An FMU folder (modelDescription.xml and sources/ with the C files) or a "
            "source FMU file (.fmu).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            file_okay=False,
            metavar="DIR",
            help="Where the built FMU goes (the FMU cache). Default: TWINFORGE_FMU_CACHE, "
            "else ~/.cache/twinforge/fmus.",
        ),
    ] = None,
    ours: Annotated[
        bool,
        typer.Option(
            "--ours", help="Build twinforge's own FMUs (the sample factory's) instead of SOURCE."
        ),
    ] = False,
) -> None:
    """Build an FMU's binary for this platform from its C sources; prints the .fmu path.

    Built with fmpy's build support (CMake and a C compiler) and checked with fmpy's
    validation. Exit 0 when built, 1 when the FMU does not build or validate (the
    compiler's or the validator's complaints on stderr), 2 on a usage error.
    """
    if ours == (source is not None):
        raise typer.BadParameter("give either SOURCE or --ours", param_hint="SOURCE")
    from twinforge.physics.build import build_fmu
    from twinforge.physics.errors import FmuError

    try:
        if ours:
            from twinforge.demo import build_sample_fmus  # the one way to twinforge.sim

            for name, path in build_sample_fmus(out).items():
                typer.echo(f"{name}: {path}")
            return
        assert source is not None
        problem = _fmu_source_problem(source)
        if problem is not None:
            _fail(problem)
        typer.echo(build_fmu(source, out))
    except FmuError as exc:
        # All of it: a failed build's message ends with the compiler's output.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _fmu_source_problem(source: Path) -> str | None:
    """Why ``source`` is no FMU to build from, before the build says it less clearly."""
    import zipfile

    if source.is_dir():
        if not (source / "modelDescription.xml").is_file():
            return (
                f"{source} has no modelDescription.xml: an FMU folder holds "
                "modelDescription.xml and sources/ with the model's C files"
            )
        return None
    if not zipfile.is_zipfile(source):
        return f"{source} is not an FMU: an FMU file is a zip archive"
    with zipfile.ZipFile(source) as archive:
        if "modelDescription.xml" not in archive.namelist():
            return f"{source} is not an FMU: it holds no modelDescription.xml"
    return None


@physics_app.command("check")
def physics_check(
    config: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="CONFIG",
            help="The physics configuration: a JSON list of bindings (interface, fmu, "
            "inputs, parameters, expected); fmu paths are relative to the file.",
            show_default=False,
        ),
    ],
    models: Annotated[
        list[Path],
        typer.Option(
            "--models",
            exists=True,
            metavar="PATH",
            help="DTDL model files or directories (searched recursively for *.json), parsed "
            "together as one set (repeatable).",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of text.")
    ] = False,
) -> None:
    """Check a physics configuration against its FMUs and the DTDL models.

    Each binding's FMU inputs, parameters and outputs against the FMU's model
    description, and its telemetry and properties (names, numbers, units) against its
    interface; source-only FMUs are built first. Prints ``ok`` per good binding and
    every problem of a bad one. Exit 0 when all fit, 1 when not, 2 on a usage error.
    """
    from twinforge.physics.build import ensure_binary
    from twinforge.physics.checks import check_binding
    from twinforge.physics.config import load_physics_config
    from twinforge.physics.errors import FmuError, PhysicsConfigError

    interfaces = _interfaces(models)
    try:
        bindings = load_physics_config(config)
    except PhysicsConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {config}: {problem}", err=True)
        raise typer.Exit(1) from None
    results = []
    for binding in bindings:
        result: dict[str, Any] = {
            "interface": binding.interface,
            "fmu": str(binding.fmu),
            "ok": False,
            "inputs": [],
            "expected": [],
            "problems": [],
        }
        results.append(result)
        interface = interfaces.get(binding.interface)
        if interface is None:
            result["problems"] = [
                f"interface: no interface {binding.interface} in the models given (--models)"
            ]
            continue
        try:
            binary = ensure_binary(binding.fmu)
            plan = check_binding(binding.model_copy(update={"fmu": binary}), interface)
        except FmuError as exc:
            result["problems"] = [str(exc)]  # it says "fmu: ..." itself
        except PhysicsConfigError as exc:
            result["problems"] = exc.problems
        else:
            result |= {
                "ok": True,
                "inputs": sorted(plan.fields),
                "expected": [e.telemetry for e in plan.expected],
            }
    ok = all(r["ok"] for r in results)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "bindings": results}, indent=2))
    else:
        for r in results:
            name = Path(r["fmu"]).name
            if r["ok"]:
                inputs = ", ".join(r["inputs"]) or "none"
                typer.echo(
                    f"ok {r['interface']}: {name}, inputs {inputs}, "
                    f"expected {', '.join(r['expected'])}"
                )
            else:
                typer.echo(f"bad {r['interface']}: {name}")
                for problem in r["problems"]:
                    typer.echo(f"  {problem}")
        bad = sum(not r["ok"] for r in results)
        typer.echo(f"{len(results)} bindings: {len(results) - bad} ok, {bad} with problems")
    raise typer.Exit(0 if ok else 1)


def _interfaces(paths: list[Path]) -> dict[str, Interface]:
    """The interfaces of the model files under ``paths``, parsed as one set; invalid
    models are ``models validate``'s report on stderr and exit status 1."""
    from twinforge.twin_models import ModelParsingError, ResolutionError, parse_models
    from twinforge.twin_models.files import (
        collect_model_paths,
        read_model_files,
        validate_model_files,
    )

    files = collect_model_paths(paths)
    if not files:
        raise typer.BadParameter("no *.json model files found", param_hint="--models")
    texts, unreadable = read_model_files(files)
    if not unreadable:
        try:
            return dict(parse_models([f.text for f in texts]).interfaces)
        except (ModelParsingError, ResolutionError):
            pass
    # Parsed again, by file, so that each error names the file it came from.
    for line in validate_model_files(files).text_lines():
        typer.echo(line, err=True)
    _fail("the models given (--models) are not valid")


_SIMULATE = """mutation($twinId: String!, $horizonS: Float!, $stepS: Float, $parameters: JSON,
  $profiles: JSON) {
  simulate(twinId: $twinId, horizonS: $horizonS, stepS: $stepS, parameters: $parameters,
    profiles: $profiles) {
    twinId startTime fromState wallS times series { telemetry values } } }"""

#: Seconds to wait for a what-if run's answer (a day at 1 s steps takes a few seconds).
SIMULATE_TIMEOUT_S = 600.0


@physics_app.command("simulate")
def physics_simulate(
    twin_id: Annotated[
        str, typer.Argument(metavar="TWIN_ID", help="The twin whose FMU runs ahead.")
    ],
    horizon: Annotated[
        float,
        typer.Option(
            "--horizon",
            metavar="SECONDS",
            help="How far ahead to run, in seconds of source time.",
            show_default=False,
        ),
    ],
    step: Annotated[
        float | None,
        typer.Option("--step", metavar="S", help="Step in seconds. Default: the binding's step_s."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PARAM=VALUE",
            help="Override an FMU parameter, as in --set bearingWear=0.5 (repeatable).",
        ),
    ] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            metavar="FIELD=OFFSET:VALUE,...",
            help="Drive an input from a profile, as in --profile valvePosition=0:0.8,300:0.2: "
            "each value, in the twin's unit, held from its offset in seconds on "
            "(repeatable).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The server's GraphQL endpoint. Default: http://TWINFORGE_API_HOST:"
            "TWINFORGE_API_PORT/graphql (http://127.0.0.1:8000/graphql).",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="TWINFORGE_API_KEY",
            metavar="SECRET",
            help="An API key (or JWT) with the operator role.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole run as one JSON object.")
    ] = False,
) -> None:
    """Run a twin's FMU ahead on a running server (what-if); the live twin is untouched.

    Calls the server's GraphQL mutation simulate: from where the twin stands, for
    --horizon seconds, with the parameters and input profiles given. Prints each
    expected telemetry field's start, min, max and end. Exit 0 when it ran, 1 when the
    server refused or could not be reached, 2 on a usage error.
    """
    import math

    if not math.isfinite(horizon) or horizon <= 0:
        raise typer.BadParameter(f"{horizon}: must be a positive number", param_hint="--horizon")
    if step is not None and (not math.isfinite(step) or step <= 0):
        raise typer.BadParameter(f"{step}: must be a positive number", param_hint="--step")
    parameters = _parameter_overrides(set_ or [])
    profiles = _profiles(profile or [])
    endpoint = url or _default_graphql_url()
    if not endpoint.startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"{endpoint!r} is not an http:// or https:// URL", param_hint="--url"
        )
    if not key:
        raise typer.BadParameter(
            "no API key: pass --key or set TWINFORGE_API_KEY", param_hint="--key"
        )
    variables = {
        "twinId": twin_id,
        "horizonS": horizon,
        "stepS": step,
        "parameters": parameters or None,
        "profiles": profiles or None,
    }
    run = _graphql(endpoint, key, _SIMULATE, variables)["simulate"]
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    start = "from saved FMU state" if run["fromState"] else "fresh steady start"
    typer.echo(
        f"{run['twinId']}: {horizon:g} s from {run['startTime']} ({start}), "
        f"{run['wallS']:.2f} s wall"
    )
    width = max([len("telemetry"), *(len(s["telemetry"]) for s in run["series"])])
    typer.echo(f"  {'telemetry':<{width}} {'start':>12} {'min':>12} {'max':>12} {'end':>12}")
    for series in run["series"]:
        values = series["values"]
        cells = [values[0], min(values), max(values), values[-1]] if values else [None] * 4
        row = " ".join(f"{'-' if v is None else f'{v:.6g}':>12}" for v in cells)
        typer.echo(f"  {series['telemetry']:<{width}} {row}")


def _number(text: str) -> float | None:
    """``text`` as a finite number, or None."""
    import math

    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parameter_overrides(texts: list[str]) -> dict[str, float]:
    parameters: dict[str, float] = {}
    for text in texts:
        name, found, raw = text.partition("=")
        name = name.strip()
        value = _number(raw.strip())
        if not found or not name or value is None:
            raise typer.BadParameter(
                f"{text!r}: write PARAM=VALUE with VALUE a finite number, as in bearingWear=0.5",
                param_hint="--set",
            )
        if name in parameters:
            raise typer.BadParameter(f"{text!r}: {name} is set twice", param_hint="--set")
        parameters[name] = value
    return parameters


def _profiles(texts: list[str]) -> dict[str, list[list[float]]]:
    profiles: dict[str, list[list[float]]] = {}
    for text in texts:
        name, found, raw = text.partition("=")
        name = name.strip()
        if not found or not name or not raw.strip():
            raise typer.BadParameter(
                f"{text!r}: write FIELD=OFFSET:VALUE,OFFSET:VALUE,... as in "
                "valvePosition=0:0.8,300:0.2",
                param_hint="--profile",
            )
        if name in profiles:
            raise typer.BadParameter(f"{text!r}: {name} has two profiles", param_hint="--profile")
        points: list[list[float]] = []
        for pair in raw.split(","):
            offset_text, colon, value_text = pair.partition(":")
            offset, value = _number(offset_text.strip()), _number(value_text.strip())
            if not colon or offset is None or value is None:
                raise typer.BadParameter(
                    f"{text!r}: {pair.strip()!r} is not OFFSET:VALUE (two finite numbers, "
                    "as in 300:20)",
                    param_hint="--profile",
                )
            if offset < 0 or (points and offset < points[-1][0]):
                raise typer.BadParameter(
                    f"{text!r}: offsets must be >= 0 and in ascending order", param_hint="--profile"
                )
            points.append([offset, value])
        profiles[name] = points
    return profiles


def _default_graphql_url() -> str:
    """The GraphQL endpoint that ``twinforge serve`` or ``demo`` here listens on, by the
    TWINFORGE_API_* settings."""
    from twinforge.config import get_settings

    try:
        settings = get_settings()
    except ValueError:  # settings that do not validate: the server would not start either
        return "http://127.0.0.1:8000/graphql"
    host = settings.api_host
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's is one of them
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    port = settings.api_port or 8000  # 0 is a free port picked at start: not knowable here
    scheme = "https" if settings.api_tls_cert_file is not None else "http"
    return f"{scheme}://{host}:{port}/graphql"


def _graphql(url: str, key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of a GraphQL request; its errors, or why the server could not be
    reached, are on stderr and exit status 1."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {key}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=SIMULATE_TIMEOUT_S) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:  # 4xx and 5xx: their body may hold GraphQL errors
        body, status = exc.read(), exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            _fail(f"{url} did not answer within {SIMULATE_TIMEOUT_S:g} s")
        if isinstance(reason, ConnectionRefusedError):
            _fail(
                f"nothing answers at {url} (connection refused): is twinforge serve or demo "
                "running there? --url names another server"
            )
        _fail(f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}")
    except TimeoutError:
        _fail(f"{url} did not answer within {SIMULATE_TIMEOUT_S:g} s")
    except OSError as exc:
        _fail(f"cannot reach {url}: {exc.strerror or exc}")
    try:
        answer = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()[:200]
        _fail(f"{url} answered HTTP {status} without GraphQL JSON: {text or '(empty)'}")
    if not isinstance(answer, dict):
        _fail(f"{url} answered HTTP {status} with JSON that is no GraphQL response")
    errors = answer.get("errors") or []
    for error in errors:
        message = error.get("message", error) if isinstance(error, dict) else error
        code = error.get("extensions", {}).get("code") if isinstance(error, dict) else None
        typer.echo(f"error: {message}" + (f" ({code})" if code else ""), err=True)
    data = answer.get("data")
    if errors or not isinstance(data, dict):
        if not errors:
            typer.echo(f"error: {url} answered HTTP {status} with no data", err=True)
        raise typer.Exit(1)
    return data


# -- ml -------------------------------------------------------------------------------

ml_app = typer.Typer(
    help="The twins' anomaly models: train, list, promote and roll back versions.\n\n"
    "train trains them from the history store; versions live in the model registry (MLflow: "
    "TWINFORGE_MLFLOW_URI, or "
    "SQLite under TWINFORGE_DATA_DIR/ml). A promoted version is installed under the data "
    "dir, where the asset hosts of a server on that data dir load it within seconds.",
    no_args_is_help=True,
)
app.add_typer(ml_app, name="ml")

_MlConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        exists=True,
        dir_okay=False,
        help="The model configuration (JSON list of name, interface, detector, features, "
        "settings). Default: TWINFORGE_ML.",
    ),
]
_MlNameOption = Annotated[
    str | None, typer.Option("--name", help="Only the models of this name (e.g. anomaly).")
]
_MlInterfaceOption = Annotated[
    str | None, typer.Option("--interface", help="Only the models of this interface DTMI.")
]


@ml_app.command("train")
def ml_train(
    config: _MlConfigOption = None,
    name: _MlNameOption = None,
    interface: _MlInterfaceOption = None,
    hours: Annotated[
        float, typer.Option(min=0.01, help="Train on the last HOURS of history.")
    ] = 24.0,
    promote: Annotated[
        bool, typer.Option("--promote", help="Promote and install each new version.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer training epochs (a smoke test).")
    ] = False,
) -> None:
    """Train each configured model on its twins' history; prints one JSON line per new
    registry version. Exit 1 if a model could not be trained (the reason on stderr)."""
    from twinforge.actors.training import TrainingWindow, promote_version, train_model, twins_of
    from twinforge.config import get_settings
    from twinforge.ml.registry import ModelRegistry

    settings = get_settings()
    bindings = _ml_bindings(config, name, interface)
    failed = False
    for binding in bindings:
        with _graph_service() as service:
            twins = tuple(twins_of(service, binding.interface))
        try:
            version = train_model(
                binding,
                TrainingWindow.last(twins, hours),
                history_url=settings.history_url,
                data_dir=settings.data_dir,
                mlflow_uri=settings.mlflow_uri,
                quick=quick,
            )
        except ValueError as exc:
            typer.echo(f"error: {binding.name} of {binding.interface}: {exc}", err=True)
            failed = True
            continue
        if promote:
            registry = ModelRegistry(settings.mlflow_uri, settings.data_dir)
            version = promote_version(registry, binding, version.version, settings.data_dir)
        typer.echo(json.dumps(_version_json(version) | {"promoted": promote}))
    if failed:
        raise typer.Exit(1)


@ml_app.command("versions")
def ml_versions(
    config: _MlConfigOption = None, name: _MlNameOption = None, interface: _MlInterfaceOption = None
) -> None:
    """Print every registry version of the configured models, one JSON line each."""
    registry, bindings = _ml_registry(config, name, interface)
    from twinforge.ml.registry import model_name

    for binding in bindings:
        for version in registry.versions(model_name(binding.name, binding.interface)):
            typer.echo(json.dumps(_version_json(version)))


@ml_app.command("promote")
def ml_promote(
    version: Annotated[int, typer.Argument(min=1, help="The registry version to promote.")],
    name: Annotated[str, typer.Option("--name", help="The model name (e.g. anomaly).")],
    interface: Annotated[str, typer.Option("--interface", help="The interface DTMI.")],
    config: _MlConfigOption = None,
) -> None:
    """Promote a version and install it for the asset hosts."""
    _ml_promote(config, name, interface, version)


@ml_app.command("rollback")
def ml_rollback(
    name: Annotated[str, typer.Option("--name", help="The model name (e.g. anomaly).")],
    interface: Annotated[str, typer.Option("--interface", help="The interface DTMI.")],
    config: _MlConfigOption = None,
) -> None:
    """Promote again the version promoted before the current one, and install it."""
    _ml_promote(config, name, interface, None)


def _ml_promote(config: Path | None, name: str, interface: str, version: int | None) -> None:
    from twinforge.actors.training import promote_version
    from twinforge.config import get_settings
    from twinforge.ml.registry import RegistryError

    registry, [binding] = _ml_registry(config, name, interface)
    try:
        promoted = promote_version(registry, binding, version, get_settings().data_dir)
    except RegistryError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(_version_json(promoted)))


def _ml_bindings(config: Path | None, name: str | None, interface: str | None) -> list[Any]:
    from twinforge.config import get_settings
    from twinforge.ml.config import load_model_config

    path = config or get_settings().ml
    if path is None:
        _fail("--config: no model configuration (give --config or set TWINFORGE_ML)")
    try:
        bindings = load_model_config(path)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    chosen = [
        b
        for b in bindings
        if (name is None or b.name == name) and (interface is None or b.interface == interface)
    ]
    if not chosen:
        _fail(f"--name/--interface: no model {name or '*'} of {interface or '*'} in {path}")
    return chosen


def _ml_registry(
    config: Path | None, name: str | None, interface: str | None
) -> tuple[Any, list[Any]]:
    from twinforge.config import get_settings
    from twinforge.ml.registry import ModelRegistry

    settings = get_settings()
    bindings = _ml_bindings(config, name, interface)
    return ModelRegistry(settings.mlflow_uri, settings.data_dir), bindings


def _version_json(version: Any) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "run": version.run_id,
        "created": version.created,
        "champion": version.promoted,
        "metrics": version.metrics,
    }
