"""``api_introspection``: ``everyone`` (the default) lets anonymous callers introspect and
open GraphiQL; ``authenticated`` keeps both for callers with credentials. A real server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.api_server import running_api

from twinforge.config import Settings
from twinforge.runtime.stores import FalkorDBStore

SCHEMA = {"query": "{ __schema { queryType { name } } }"}
HIDDEN = {"query": 'query { ...F } fragment F on Query { __type(name: "Query") { name } }'}
TYPENAME = {"query": "{ __typename }"}
HTML = {"Accept": "text/html"}


def test_everyone_may_introspect_by_default(embedded_store: FalkorDBStore, tmp_path: Path) -> None:
    assert Settings().api_introspection == "everyone"
    with running_api(embedded_store, tmp_path) as api:
        assert httpx.post(api.url, json=SCHEMA).json() == {
            "data": {"__schema": {"queryType": {"name": "Query"}}}
        }
        page = httpx.get(api.url, headers=HTML)
        assert page.status_code == 200 and "graphiql" in page.text.lower()


def test_authenticated_only(embedded_store: FalkorDBStore, tmp_path: Path) -> None:
    with running_api(embedded_store, tmp_path, introspection="authenticated") as api:
        for query in (SCHEMA, HIDDEN):
            refused = httpx.post(api.url, json=query).json()
            assert refused["data"] is None
            assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert "introspection is for authenticated callers" in refused["errors"][0]["message"]
        assert httpx.post(api.url, json=TYPENAME).json() == {"data": {"__typename": "Query"}}
        page = httpx.get(api.url, headers=HTML)
        assert page.status_code == 401 and "TWINFORGE_API_INTROSPECTION" in page.text

        key = {"X-API-Key": api.keys.create("dev", ["viewer"]).secret}
        assert httpx.post(api.url, json=SCHEMA, headers=key).json()["data"]["__schema"]
        # The validation cache must not let the next anonymous caller through.
        assert httpx.post(api.url, json=SCHEMA).json()["data"] is None
        assert httpx.get(api.url, headers={**HTML, **key}).status_code == 200


def test_the_setting_names_its_values() -> None:
    with pytest.raises(ValueError, match="api_introspection"):
        Settings(api_introspection="nobody")  # type: ignore[arg-type]
