"""The embedded FalkorDB is locked: every listener asks for its generated password, which
the server's stores, the asset hosts (another process, by URL) and ``twinforge graph ...``
beside a running server (by the data dir) all have, and which no file others can read, no
command line, log or repr shows. Real servers and processes throughout."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from twinforge.actors.asset_host import HostConfig
from twinforge.runtime.stores import EmbeddedFalkorDB, FalkorDBStore, find_running, open_graph_store

WRITE = ["GRAPH.QUERY", "twins", "CREATE (:Intruder {id: 'x'})"]
READ = ["GRAPH.RO_QUERY", "twins", "MATCH (n) RETURN count(n)"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def holder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> FalkorDBStore:
    caplog.set_level(logging.DEBUG)
    store = open_graph_store(None, tmp_path)
    assert isinstance(store, FalkorDBStore) and store.server is not None
    store.write("CREATE (:Thing {id: 'held'})")
    yield store
    store.close()


def _clients(server: EmbeddedFalkorDB, password: str | None) -> list[redis.Redis]:
    """Raw clients on TCP and the unix socket, speaking RESP2 as ``redis-cli`` does (a
    RESP3 client's HELLO is refused first, before any graph command)."""
    tcp = redis.Redis(host="127.0.0.1", port=server.port, password=password, protocol=2)
    assert server.unix_socket is not None
    unix = redis.Redis(unix_socket_path=server.unix_socket, password=password, protocol=2)
    return [tcp, unix]


def test_without_the_password_graph_queries_are_refused(holder: FalkorDBStore) -> None:
    server = holder.server
    assert server is not None
    for client in _clients(server, None):
        for command in (WRITE, READ):
            # The server's NOAUTH reply, which redis-py words so.
            with pytest.raises(redis.exceptions.AuthenticationError, match="required"):
                client.execute_command(*command)
        client.close()
    for client in _clients(server, "not-the-password"):
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.execute_command(*WRITE)
        client.close()
    for client in _clients(server, server.password):
        assert client.execute_command(*READ)[1] == [[1]]
        client.close()
    assert holder.read("MATCH (n:Intruder) RETURN count(n) AS n") == [{"n": 0}]


def test_the_password_file_is_owner_only_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "falkordb"
    with EmbeddedFalkorDB(tmp_path) as server:
        first = server.password
        assert len(first) >= 32
        assert _mode(directory) == 0o700
        for name in ("falkordb.password", "falkordb.conf", "falkordb.endpoint.json"):
            assert _mode(directory / name) == 0o600, name
        endpoint = (directory / "falkordb.endpoint.json").read_text()
        assert json.loads(endpoint)["port"] == server.port
        assert first not in endpoint
        assert server.pid is not None
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert first.encode() not in command_line  # ps shows it to every user
    with EmbeddedFalkorDB(tmp_path) as server:
        assert server.password == first
    # One others could read may have been read: replaced, and the old one stops working.
    (directory / "falkordb.password").chmod(0o644)
    with EmbeddedFalkorDB(tmp_path) as server:
        assert server.password != first
        assert _mode(directory / "falkordb.password") == 0o600
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=server.port, password=first).ping()


def test_another_process_reaches_the_graph_by_url_and_by_data_dir(
    tmp_path: Path, holder: FalkorDBStore
) -> None:
    server = holder.server
    assert server is not None
    # An asset host: the URL the server hands it. Then `twinforge graph ...` beside the
    # running server: only the data dir.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from twinforge.runtime.stores import open_graph_store\n"
        "url = sys.argv[1] or None\n"
        "store = open_graph_store(url, Path(sys.argv[2]), share_running=True)\n"
        "store.write('CREATE (:Thing {id: $id})', {'id': sys.argv[3]})\n"
        "print(store.read('MATCH (t:Thing) RETURN count(t) AS n')[0]['n'])\n"
        "store.close()\n"
    )
    for url, twin in ((server.client_url, "by-url"), ("", "by-data-dir")):
        done = subprocess.run(
            [sys.executable, "-c", script, url, str(tmp_path), twin],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert holder.read("MATCH (t:Thing) RETURN t.id AS id ORDER BY id") == [
        {"id": "by-data-dir"},
        {"id": "by-url"},
        {"id": "held"},
    ]
    running = find_running(tmp_path)
    assert running is not None and running.password == server.password


def test_the_password_is_in_no_log_repr_or_shown_url(
    tmp_path: Path, holder: FalkorDBStore, caplog: pytest.LogCaptureFixture
) -> None:
    server = holder.server
    assert server is not None
    password = server.password
    guest = open_graph_store(None, tmp_path, share_running=True)
    try:
        host_config = HostConfig(tmp_path, graph_url=server.client_url)
        shown = [
            server.url,
            repr(server),
            repr(holder),
            repr(guest),
            repr(find_running(tmp_path)),
            repr(host_config),
            repr(holder._db.connection),
        ]
        for text in shown:
            assert password not in text, text
        assert password in server.client_url  # only what is handed to other processes
    finally:
        guest.close()
    assert password not in caplog.text
    assert password not in (tmp_path / "falkordb" / "falkordb.log").read_text()
