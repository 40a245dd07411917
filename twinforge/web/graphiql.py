"""GraphiQL without internet. strawberry's GraphiQL page loads React, GraphiQL and its
explorer plugin from unpkg; factory networks are often offline, so the package carries
those files (``static/graphiql``, see its README) and the page is pointed at them, served
under ``/graphql/static``."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from strawberry.http.ides import get_graphql_ide_html

logger = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).parent / "static" / "graphiql"
#: Where the app serves ``ASSETS_DIR``: beside ``/graphql``, which strawberry takes as an
#: exact path only, so this goes through FastAPI's router.
ASSETS_PATH = "/graphql/static"

_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE)
_UNPKG = re.compile(r"https://unpkg\.com/((?:@[\w.-]+/)?[\w.-]+)@([\w.-]+)/([\w./-]+)")
#: Attributes that only make sense for a CDN (and would pin the CDN's exact bytes).
_CDN_ATTRIBUTES = re.compile(r'\s+(?:crossorigin(?:="[^"]*")?|integrity="[^"]*")(?=[\s/>])')
_OFF_HOST = re.compile(r"""(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE)


def _local(match: re.Match[str]) -> str | None:
    """The vendored copy of an unpkg URL, relative to the page; None if there is none."""
    name, version, path = match.groups()
    # One flat folder per package version (no ``dist/``: .gitignore would drop it).
    folder = f"{name.removeprefix('@').replace('/', '-')}-{version}"
    file = PurePosixPath(path).name
    if not (ASSETS_DIR / folder / file).is_file():
        return None
    # Relative to the page (which is only ever ``.../graphql``): right behind a proxy
    # that serves the API under a path prefix, too.
    return f"{ASSETS_PATH.lstrip('/')}/{folder}/{file}"


def offline_html(html: str) -> str:
    """``html`` with each unpkg asset that ``ASSETS_DIR`` holds taken from there instead.
    Whatever still points off-host (another version than the vendored one, another CDN)
    is left as it is, with a warning."""

    def rewrite(tag: re.Match[str]) -> str:
        text = tag[0]
        found = _UNPKG.search(text)
        local = _local(found) if found else None
        if found is None or local is None:
            return text
        return _CDN_ATTRIBUTES.sub("", text.replace(found[0], local))

    page = _TAG.sub(rewrite, html)
    if left := _OFF_HOST.findall(page):
        logger.warning(
            "GraphiQL still loads %s from the internet: refresh twinforge/web/static/graphiql "
            "(see its README) for this strawberry version",
            ", ".join(left),
        )
    return page


@functools.cache
def graphiql_html() -> str:
    """strawberry's GraphiQL page, on the vendored assets."""
    return offline_html(get_graphql_ide_html("graphiql"))


class GraphiQLAssets(StaticFiles):
    """``ASSETS_DIR``, cached by browsers for a year: each folder is one package version."""

    def __init__(self) -> None:
        super().__init__(directory=ASSETS_DIR)

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response
