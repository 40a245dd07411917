"""The simulated PLC's OPC UA security: signed or encrypted endpoints only (no ``None``),
its own application certificate, and user-name sessions checked against a password.

asyncua serves CreateSession and ActivateSession on the unsecured channel meant for
discovery even when it offers no ``None`` endpoint, so the user check also refuses
sessions whose channel carries no client certificate (every signed channel has one).
Client certificates are accepted whatever they are (like a PLC with an open trust list);
what the simulator proves is the client side: policies, pinning and identities.
"""

from __future__ import annotations

import hmac
import socket
from dataclasses import dataclass, field
from typing import Any

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = ["SECURE_POLICIES", "PlcSecurity", "server_certificate"]

APPLICATION_URI = "urn:twinforge:sim:plc"
SECURE_POLICIES = (
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)


def server_certificate(application_uri: str = APPLICATION_URI) -> tuple[bytes, bytes]:
    """A new self-signed OPC UA server certificate (DER) and its key (PEM)."""
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, application_uri, {}, names, extended=[ExtendedKeyUsageOID.SERVER_AUTH], days=365
    )
    return cert.public_bytes(Encoding.DER), cert_gen.dump_private_key_as_pem(key)


@dataclass(frozen=True)
class PlcSecurity:
    """Users (name → password) allowed in, the endpoints served, and the certificate:
    ``certificate`` (DER) and ``private_key`` (PEM) are made when not given."""

    users: dict[str, str] = field(repr=False)
    policies: tuple[ua.SecurityPolicyType, ...] = SECURE_POLICIES
    certificate: bytes = b""
    private_key: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not self.users or not all(name and secret for name, secret in self.users.items()):
            raise ValueError("users: need at least one user, each with a non-empty password")
        if not self.policies or ua.SecurityPolicyType.NoSecurity in self.policies:
            raise ValueError("policies: need at least one, and NoSecurity is not one")
        if bool(self.certificate) != bool(self.private_key):
            raise ValueError("certificate and private_key: give both or neither")
        if not self.certificate:
            cert, key = server_certificate()
            object.__setattr__(self, "certificate", cert)
            object.__setattr__(self, "private_key", key)

    def user_manager(self) -> UserManager:
        return _PasswordUsers(self.users)

    async def apply(self, server: Server) -> None:
        """Secure ``server`` (made with :meth:`user_manager`), before it starts."""
        await server.set_application_uri(APPLICATION_URI)
        await server.load_certificate(self.certificate, format="der")
        await server.load_private_key(self.private_key, format="pem")
        server.set_security_policy(list(self.policies))
        server.set_identity_tokens([ua.UserNameIdentityToken])


class _PasswordUsers(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: secret.encode() for name, secret in users.items()}

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if not certificate:  # the unsecured discovery channel (None or b""): no sessions there
            return None
        expected = self._users.get(username or "")
        given = (password or "").encode()
        # Compared in constant time, and compared even for unknown names (timing says nothing).
        if not hmac.compare_digest(expected or b"\0" * 32, given) or expected is None:
            return None
        return User(role=UserRole.User, name=username)
