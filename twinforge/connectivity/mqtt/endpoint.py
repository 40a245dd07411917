"""Where an MQTT client connects and how it proves who it is: host, port, TLS, login.

Only the standard library and paho, so that the simulated plant (``twinforge.sim``) can
use it as the server does. Credentials never come from the URL: they belong in settings
(or files), where they are not logged along with the URL.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

__all__ = ["DEFAULT_PORTS", "MqttEndpoint", "parse_mqtt_url"]

#: Port of each URL scheme when the URL names none.
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_URL_SETTING = "TWINFORGE_MQTT_URL"
_SHAPE = "mqtt://host[:port] or mqtts://host[:port]"


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """A broker to connect to. ``tls``: TLS 1.2 or newer with the certificate checked
    against ``ca_file`` (None: the system's CAs) and the host name; ``cert_file`` and
    ``key_file``: a client certificate. ``username``/``password``: MQTT's login."""

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("MQTT endpoint: host must not be empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"MQTT endpoint: port must be an integer, got {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"MQTT endpoint: port must be from 1 to 65535, got {self.port}")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("MQTT endpoint: CA, certificate and key files need tls=True")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("MQTT endpoint: a client certificate needs its key (set both)")
        if self.password is not None and self.username is None:
            raise ValueError("MQTT endpoint: a password needs a username")

    @property
    def url(self) -> str:
        """``mqtt(s)://host:port``, without credentials: safe to log and show."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def with_login(self, username: str, password: str | None) -> MqttEndpoint:
        """The same broker, logged in as ``username``."""
        return replace(self, username=username, password=password)

    def apply(self, client: mqtt.Client) -> None:
        """Set up ``client``'s TLS and login for this endpoint (before it connects).

        ``ValueError`` naming the file when a CA, certificate or key cannot be loaded.
        """
        if self.tls:
            try:
                context = ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file else None
                )
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"MQTT TLS: cannot load CA file {self.ca_file}: {error}") from None
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert_file is not None:
                try:
                    context.load_cert_chain(self.cert_file, self.key_file)
                except (OSError, ssl.SSLError) as error:
                    raise ValueError(
                        f"MQTT TLS: cannot load client certificate {self.cert_file} with key"
                        f" {self.key_file}: {error}"
                    ) from None
            # create_default_context checks the certificate and the host name; paho then
            # passes the host as server_hostname.
            client.tls_set_context(context)
            client.tls_insecure_set(False)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)

    def __repr__(self) -> str:
        files = ", ".join(
            f"{name}={str(value)!r}"
            for name, value in (
                ("ca_file", self.ca_file),
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
            )
            if value is not None
        )
        login = f", username={self.username!r}" if self.username is not None else ""
        secret = ", password=<set>" if self.password is not None else ""
        return f"MqttEndpoint({self.url!r}{', ' + files if files else ''}{login}{secret})"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """The endpoint of an ``mqtt://`` or ``mqtts://`` URL (ports 1883 / 8883 by default),
    without TLS files or login; ``ValueError`` naming ``TWINFORGE_MQTT_URL`` and the rule."""
    if not url.strip():
        raise ValueError(
            f"{_URL_SETTING} is empty; unset it to use the embedded broker, or set {_SHAPE}"
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(
            f"{_URL_SETTING} must look like {_SHAPE} with a port from 1 to 65535: {exc}"
        ) from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"{_URL_SETTING} must use the mqtt:// or mqtts:// scheme ({_SHAPE}),"
            f" got {parts.scheme or 'none'!r}"
        )
    if parts.username is not None or parts.password is not None:
        # Not quoting the URL: it holds a secret.
        raise ValueError(
            f"{_URL_SETTING} must not carry credentials ({_SHAPE}); set TWINFORGE_MQTT_USERNAME"
            " and TWINFORGE_MQTT_PASSWORD (or TWINFORGE_MQTT_PASSWORD_FILE) instead"
        )
    if not parts.hostname:
        raise ValueError(f"{_URL_SETTING} must name a host ({_SHAPE}), got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{_URL_SETTING} must have no path, query or fragment ({_SHAPE}), got {url!r}"
        )
    if port == 0:
        raise ValueError(f"{_URL_SETTING} port must be from 1 to 65535, got 0 in {url!r}")
    return MqttEndpoint(
        parts.hostname, port or DEFAULT_PORTS[parts.scheme], tls=parts.scheme == "mqtts"
    )
