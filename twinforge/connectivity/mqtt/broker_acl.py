"""Who may publish, subscribe to and receive what on the embedded broker (amqtt plugins).

Keyed by the session's username, i.e. the credential the guard
(:mod:`twinforge.connectivity.mqtt.broker_guard`) admitted:

* a ``server`` credential subscribes to telemetry and properties of any twin and to its
  own reply topics ``twins/+/replies/{its client id}``, and publishes commands;
* a ``device`` publishes only its own twins' telemetry, properties and command replies,
  and subscribes only to command topics; a wildcard twin level (the plant takes every
  twin's commands on one subscription) is allowed, but it receives only its own twins'.

Anything else is refused, ``#`` and ``$SYS`` included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from twinforge.auth.devices import SERVER, DeviceCredential
from twinforge.connectivity.mqtt.topics import COMMANDS, PROPERTIES, REPLIES, TELEMETRY

if TYPE_CHECKING:
    from twinforge.connectivity.mqtt.broker_guard import Connections

__all__ = ["GuardedAuthPlugin", "TwinAclPlugin", "allowed"]


def allowed(credential: DeviceCredential, client_id: str, topic: str, action: Action) -> bool:
    """Whether ``credential`` (connected as ``client_id``) may do ``action`` on ``topic``
    (a topic filter for SUBSCRIBE, a topic name otherwise)."""
    if action != Action.SUBSCRIBE and ("+" in topic or "#" in topic):
        return False  # a topic name, never a filter (amqtt does not check a will's)
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != "twins" or not levels[1] or "#" in levels[:-1]:
        return False
    twin, rest = levels[1], levels[2:]
    if credential.kind == SERVER:
        return _server_may(client_id, rest, action)
    own = twin in credential.twins
    match action:
        case Action.PUBLISH:
            return (own and _is_report(rest)) or (own and len(rest) == 2 and rest[0] == REPLIES)
        case Action.SUBSCRIBE:
            return (own or twin == "+") and len(rest) == 2 and rest[0] == COMMANDS
        case Action.RECEIVE:
            return own and len(rest) == 2 and rest[0] == COMMANDS
    return False


def _server_may(client_id: str, rest: list[str], action: Action) -> bool:
    if "#" in rest:
        return False
    match action:
        case Action.PUBLISH:
            return len(rest) == 2 and rest[0] == COMMANDS
        case Action.SUBSCRIBE:
            return _is_report(rest) or rest == [REPLIES, client_id]
        case Action.RECEIVE:
            return _is_report(rest) or rest == [REPLIES, client_id]
    return False


def _is_report(rest: list[str]) -> bool:
    """``telemetry``, ``telemetry/{component}`` or ``properties``."""
    return rest in ([TELEMETRY], [PROPERTIES]) or (
        len(rest) == 2 and rest[0] == TELEMETRY and bool(rest[1])
    )


@dataclass
class _Config:
    #: The guard's live connections (an object, so typed ``Any`` for dacite).
    connections: Any = None


class TwinAclPlugin(BaseTopicPlugin):
    """amqtt topic plugin applying :func:`allowed`."""

    Config = _Config

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        connections: Connections = self.config.connections
        credential = connections.credential(session.username if session else None)
        if credential is None or session is None or topic is None or action is None:
            return False
        return allowed(credential, session.client_id or "", topic, action)


class GuardedAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: the guard has checked the password; this only confirms the
    session is one it admitted, so nothing reaches amqtt around it."""

    Config = _Config

    async def authenticate(self, *, session: Session) -> bool:
        connections: Connections = self.config.connections
        return connections.credential(session.username) is not None
