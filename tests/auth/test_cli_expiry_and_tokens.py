"""`twinforge keys create --expires-in` and `twinforge tokens revoke`, run as the real
command on a data dir that this process (standing in for a running server) also holds;
and the demo's admin key, reused across starts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from twinforge.auth.api_keys import ApiKeyStore
from twinforge.auth.errors import Unauthenticated
from twinforge.auth.token_revocations import TokenRevocations
from twinforge.auth.tokens import TokenIssuer
from twinforge.demo import ADMIN_KEY_FILE, demo_admin_key

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twinforge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TWINFORGE_DATA_DIR": str(data_dir)},
        timeout=120,
    )


def test_keys_create_with_an_expiry_and_unique_names(tmp_path: Path) -> None:
    created = _run(tmp_path, "keys", "create", "nightly", "--role", "viewer", "--expires-in", "2h")
    assert created.returncode == 0, created.stderr
    with ApiKeyStore(tmp_path / "api_keys.sqlite3") as store:
        (key,) = store.list()
        assert key.expires is not None
        assert abs(key.expires - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    assert "until " in _run(tmp_path, "keys", "list").stdout
    again = _run(tmp_path, "keys", "create", "nightly", "--role", "viewer")
    assert again.returncode == 2 and "name: must be unique" in again.stderr
    bad = _run(tmp_path, "keys", "create", "x", "--role", "viewer", "--expires-in", "soon")
    assert bad.returncode == 2 and "--expires-in: expected a number and a unit" in bad.stderr


def test_tokens_revoke_beside_a_running_server(tmp_path: Path) -> None:
    with TokenRevocations.in_data_dir(tmp_path) as revocations:
        server = TokenIssuer(b"k" * 32, revocations=revocations)
        issued = server.issue_token("ada", ["engineer"])
        assert server.verify(issued.token).id == "jwt:ada"
        revoked = _run(tmp_path, "tokens", "revoke", issued.jti)
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(Unauthenticated, match="was revoked"):
            server.verify(issued.token)
    unknown = _run(tmp_path, "tokens", "revoke", "f" * 32)
    assert unknown.returncode == 1 and f"no live token {'f' * 32}" in unknown.stderr


def test_the_demo_reuses_its_admin_key(tmp_path: Path) -> None:
    with ApiKeyStore(tmp_path / "api_keys.sqlite3", hasher=CHEAP) as keys:
        keys.create("demo-admin", ["admin"])  # left by an older demo, its secret lost
        first = demo_admin_key(keys, tmp_path)
        assert stat.S_IMODE((tmp_path / ADMIN_KEY_FILE).stat().st_mode) == 0o600
        assert demo_admin_key(keys, tmp_path) == first
        live = [k for k in keys.list() if k.revoked is None]
        assert [k.name for k in live] == ["demo-admin"] and len(keys.list()) == 2
        principal = keys.verify(first)
        assert principal is not None and principal.roles == {"admin"}
        keys.revoke(principal.id.removeprefix("key:"))
        replaced = demo_admin_key(keys, tmp_path)
        assert replaced != first and keys.verify(replaced) is not None
        assert (tmp_path / ADMIN_KEY_FILE).read_text().strip() == replaced
