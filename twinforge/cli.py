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
        "devices: MQTT credentials of plant devices. audit: verify and show the audit trail."
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
