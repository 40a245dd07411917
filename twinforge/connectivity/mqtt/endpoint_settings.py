"""The :class:`MqttEndpoint` the ``TWINFORGE_MQTT_*`` client settings describe."""

from __future__ import annotations

from pathlib import Path

from twinforge.config import Settings
from twinforge.connectivity.mqtt.endpoint import MqttEndpoint, parse_mqtt_url

__all__ = ["endpoint_from_settings"]


def endpoint_from_settings(settings: Settings) -> MqttEndpoint:
    """``settings.mqtt_url`` with its TLS files and login. ``ValueError`` naming the
    ``TWINFORGE_`` variable and the rule (a missing file, a certificate without its key,
    TLS files on an ``mqtt://`` URL, two passwords, a password without a user)."""
    if settings.mqtt_url is None:
        raise ValueError("TWINFORGE_MQTT_URL is not set: no external broker to connect to")
    endpoint = parse_mqtt_url(settings.mqtt_url)
    files = {
        "TWINFORGE_MQTT_CA_FILE": settings.mqtt_ca_file,
        "TWINFORGE_MQTT_CERT_FILE": settings.mqtt_cert_file,
        "TWINFORGE_MQTT_KEY_FILE": settings.mqtt_key_file,
    }
    given = [name for name, path in files.items() if path is not None]
    if given and not endpoint.tls:
        raise ValueError(
            f"{', '.join(given)}: TLS files need an mqtts:// TWINFORGE_MQTT_URL, got {endpoint.url}"
        )
    for name in given:
        _check_readable(name, files[name])
    if (settings.mqtt_cert_file is None) != (settings.mqtt_key_file is None):
        raise ValueError(
            "TWINFORGE_MQTT_CERT_FILE and TWINFORGE_MQTT_KEY_FILE: a client certificate"
            " needs its key, set both or neither"
        )
    password = _password(settings)
    if password is not None and settings.mqtt_username is None:
        raise ValueError(
            "TWINFORGE_MQTT_USERNAME: must be set when a password is"
            " (TWINFORGE_MQTT_PASSWORD or TWINFORGE_MQTT_PASSWORD_FILE)"
        )
    return MqttEndpoint(
        endpoint.host,
        endpoint.port,
        tls=endpoint.tls,
        ca_file=settings.mqtt_ca_file,
        cert_file=settings.mqtt_cert_file,
        key_file=settings.mqtt_key_file,
        username=settings.mqtt_username,
        password=password,
    )


def _password(settings: Settings) -> str | None:
    if settings.mqtt_password is not None and settings.mqtt_password_file is not None:
        raise ValueError(
            "TWINFORGE_MQTT_PASSWORD and TWINFORGE_MQTT_PASSWORD_FILE: set one, not both"
        )
    if settings.mqtt_password is not None:
        return settings.mqtt_password.get_secret_value()
    if settings.mqtt_password_file is None:
        return None
    _check_readable("TWINFORGE_MQTT_PASSWORD_FILE", settings.mqtt_password_file)
    password = settings.mqtt_password_file.read_text(encoding="utf-8").strip()
    if not password:
        raise ValueError(f"TWINFORGE_MQTT_PASSWORD_FILE: {settings.mqtt_password_file} is empty")
    return password


def _check_readable(name: str, path: Path | None) -> None:
    if path is None or not path.is_file():
        raise ValueError(f"{name}: {path} is not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise ValueError(f"{name}: {path} cannot be read: {error.strerror}") from None
