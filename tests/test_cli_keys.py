"""`twinforge keys create|list|revoke`, run as the real command on a data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twinforge.auth.api_keys import ApiKeyStore


def _keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twinforge", "keys", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TWINFORGE_DATA_DIR": str(data_dir)},
        timeout=120,
    )


def test_keys_are_created_listed_and_revoked(tmp_path: Path) -> None:
    created = _keys(tmp_path, "create", "line-7 display", "--role", "viewer", "--role", "operator")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("tfk_")
    with ApiKeyStore(tmp_path / "api_keys.sqlite3") as store:
        principal = store.verify(secret)
        assert principal is not None and principal.roles == {"viewer", "operator"}
        key_id = store.list()[0].key_id
    listed = _keys(tmp_path, "list")
    assert key_id in listed.stdout and "line-7 display" in listed.stdout
    assert secret not in listed.stdout and "active" in listed.stdout
    assert _keys(tmp_path, "revoke", key_id).returncode == 0
    assert "revoked" in _keys(tmp_path, "list").stdout
    with ApiKeyStore(tmp_path / "api_keys.sqlite3") as store:
        assert store.verify(secret) is None
    assert _keys(tmp_path, "revoke", "0000000000000000").returncode == 1


def test_a_bad_role_is_refused_naming_the_field(tmp_path: Path) -> None:
    refused = _keys(tmp_path, "create", "x", "--role", "root")
    assert refused.returncode == 2
    assert "roles" in refused.stderr and "root" in refused.stderr
