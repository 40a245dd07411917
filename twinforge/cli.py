"""The ``twinforge`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from twinforge import __version__

app = typer.Typer(
    name="twinforge",
    help=(
        "twinforge: a digital-twin graph server for factories. DTDL models describe asset "
        "types, a twin graph holds the plant, live asset actors hold telemetry and commands, "
        "and a GraphQL API serves it all.\n\n"
        "models: check DTDL model files before loading them."
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
