"""Ingest metrics scraped from the real HTTP endpoint and parsed as Prometheus text."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from twinforge.ingest.messages import NOT_JSON, UNKNOWN_TWIN
from twinforge.metrics import ServerMetrics


def scrape(url: str) -> dict[str, list[Sample]]:
    """Samples by metric family name, fetched over HTTP."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    [match] = [s.value for s in samples if s.name == name and s.labels == labels]
    return match


def test_recorded_metrics_are_served_over_http() -> None:
    metrics = ServerMetrics()
    metrics.received("mqtt", 10)
    metrics.received("opcua")
    metrics.accepted("mqtt", 7)
    metrics.rejected("mqtt", NOT_JSON, 2)
    metrics.rejected("mqtt", UNKNOWN_TWIN)
    metrics.command("sent")
    metrics.command("denied")
    metrics.command("sent")
    metrics.latency([0.0005, 0.003, 0.2, 12.0, -0.5, float("nan")])
    metrics.batch(1)
    metrics.batch(300)
    metrics.assets_live(42)
    metrics.actor_processes(3)
    server, port = metrics.serve()
    with server:
        assert port > 0 and server.url == f"http://127.0.0.1:{port}/metrics"
        families = scrape(server.url)
    messages = families["twinforge_ingest_messages"]
    assert value(messages, "twinforge_ingest_messages_total", transport="mqtt") == 10
    assert value(messages, "twinforge_ingest_messages_total", transport="opcua") == 1
    accepted = families["twinforge_ingest_accepted"]
    assert value(accepted, "twinforge_ingest_accepted_total", transport="mqtt") == 7
    rejected = families["twinforge_ingest_rejected"]
    total = "twinforge_ingest_rejected_total"
    assert value(rejected, total, transport="mqtt", reason=NOT_JSON) == 2
    assert value(rejected, total, transport="mqtt", reason=UNKNOWN_TWIN) == 1
    commands = families["twinforge_commands"]
    assert value(commands, "twinforge_commands_total", status="sent") == 2
    latency = families["twinforge_ingest_latency_seconds"]
    bucket = "twinforge_ingest_latency_seconds_bucket"
    # -0.5 (a device clock ahead) counts as 0; NaN is skipped.
    assert value(latency, "twinforge_ingest_latency_seconds_count") == 5
    assert value(latency, bucket, le="0.001") == 2
    assert value(latency, bucket, le="0.005") == 3
    assert value(latency, bucket, le="10.0") == 4
    assert value(latency, bucket, le="+Inf") == 5
    batch = families["twinforge_actor_batch_size"]
    assert value(batch, "twinforge_actor_batch_size_count") == 2
    assert value(batch, "twinforge_actor_batch_size_sum") == 301
    assert value(families["twinforge_assets_live"], "twinforge_assets_live") == 42
    assert value(families["twinforge_actor_processes"], "twinforge_actor_processes") == 3


def test_each_instance_has_its_own_registry_and_server() -> None:
    first, second = ServerMetrics(), ServerMetrics()
    first.received("mqtt", 5)
    with first.serve()[0] as a, second.serve()[0] as b:
        assert a.port != b.port
        got_a = scrape(a.url)["twinforge_ingest_messages"]
        got_b = scrape(b.url)["twinforge_ingest_messages"]
    assert value(got_a, "twinforge_ingest_messages_total", transport="mqtt") == 5
    assert [s for s in got_b if s.name == "twinforge_ingest_messages_total"] == []
    assert b"twinforge_ingest_messages_total" in first.exposition()


def test_stop_frees_the_port_and_a_given_port_is_used() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    server, port = ServerMetrics().serve(port=wanted)
    assert port == wanted
    server.stop()
    server.stop()  # idempotent
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", wanted))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.received("", 1), "transport must be a non-empty string"),
        (lambda m: m.received("x" * 65), "at most 64 characters"),
        (lambda m: m.received("mqtt", -1), "n must be a non-negative integer"),
        (lambda m: m.accepted("mqtt", 1.5), "n must be a non-negative integer"),
        (lambda m: m.rejected("mqtt", None), "reason must be a non-empty string"),
        (lambda m: m.command(3), "status must be a non-empty string"),
        (lambda m: m.batch(-2), "size must be a non-negative integer"),
        (lambda m: m.assets_live(True), "n must be a non-negative integer"),
        (lambda m: m.serve(port=70000), "port must be an integer from 0 to 65535"),
    ],
)
def test_bad_arguments_get_clear_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(ServerMetrics())  # type: ignore[operator]
