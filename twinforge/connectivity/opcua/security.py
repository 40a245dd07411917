"""How twinforge's OPC UA clients (the ingest subscription, the command transport and
discovery) secure their connection: one :class:`ClientSecurity`, built from the settings
by :func:`client_security`, whose :meth:`~ClientSecurity.connect` replaces
``Client.connect``.

Before each connection the server's endpoints are read over the unsecured discovery
channel every server offers; the endpoint of the configured policy and mode is chosen,
its certificate checked against the trust list, and only then is the secure channel
opened with that certificate pinned (so a server swapped in later is refused too).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto

from twinforge.config import Settings
from twinforge.connectivity.opcua.certificates import (
    ApplicationCertificate,
    OpcUaSecurityError,
    TrustList,
    application_certificate,
    load_application_certificate,
)

__all__ = ["NO_SECURITY", "ClientSecurity", "OpcUaSecurityError", "client_security"]

log = logging.getLogger(__name__)

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
# Refusals of who we say we are, and of our application certificate or channel.
_IDENTITY_REFUSED = {
    "BadUserAccessDenied",
    "BadIdentityTokenInvalid",
    "BadIdentityTokenRejected",
    "BadUserSignatureInvalid",
}
_CHANNEL_REFUSED = {
    "BadCertificateUntrusted",
    "BadCertificateInvalid",
    "BadCertificateUriInvalid",
    "BadCertificateTimeInvalid",
    "BadCertificateUseNotAllowed",
    "BadCertificateRevoked",
    "BadSecurityChecksFailed",
    "BadSecurityPolicyRejected",
    "BadSecurityModeRejected",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the session is: anonymous, a user name and password, or an X.509 user."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    certificate: Path | None = None
    private_key: Path | None = None

    def describe(self) -> str:
        if self.username is not None:
            return f"user {self.username!r} (TWINFORGE_OPCUA_USERNAME / TWINFORGE_OPCUA_PASSWORD)"
        if self.certificate is not None:
            return f"user certificate {self.certificate} (TWINFORGE_OPCUA_USER_CERTIFICATE)"
        return (
            "an anonymous user (set TWINFORGE_OPCUA_USERNAME or TWINFORGE_OPCUA_USER_CERTIFICATE)"
        )


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """The policy, mode, application certificate, trust list and identity of a client.

    ``policy`` None is no security at all (``TWINFORGE_OPCUA_SECURITY=None``).
    """

    policy: type[security_policies.SecurityPolicy] | None
    mode: ua.MessageSecurityMode
    certificate: ApplicationCertificate | None = None
    trust: TrustList | None = None
    identity: Identity = Identity()

    def __post_init__(self) -> None:
        if self.policy is not None and (self.certificate is None or self.trust is None):
            raise ValueError("a security policy needs an application certificate and a trust list")

    @property
    def name(self) -> str:
        if self.policy is None:
            return "None"
        policy = next(name for name, cls in POLICIES.items() if cls is self.policy)
        return f"{policy},{self.mode.name}"

    async def connect(self, client: Client) -> None:
        """``client.connect()`` with this security; a refusal for security's sake raises
        :class:`OpcUaSecurityError` naming the setting to change."""
        endpoint = client.server_url.geturl()
        await self._secure(client, endpoint)
        try:
            await client.connect()
        except ua.UaStatusCodeError as exc:
            status = ua.StatusCode(exc.code).name
            if status in _IDENTITY_REFUSED:
                raise OpcUaSecurityError(
                    f"OPC UA server {endpoint} refused {self.identity.describe()}: {status}"
                ) from None
            if status in _CHANNEL_REFUSED:
                raise OpcUaSecurityError(self._channel_refused(endpoint, status)) from None
            raise

    def _channel_refused(self, endpoint: str, status: str) -> str:
        if self.certificate is None:
            return f"OPC UA server {endpoint} refused the connection: {status}"
        return (
            f"OPC UA server {endpoint} refused twinforge's application certificate "
            f"{self.certificate.certificate} (thumbprint {self.certificate.thumbprint}, "
            f"application URI {self.certificate.application_uri}): {status}; add it to the "
            "server's trusted certificates"
        )

    async def _secure(self, client: Client, endpoint: str) -> None:
        chosen = await self._endpoint(client, endpoint)
        if self.policy is not None:
            assert self.certificate is not None and self.trust is not None
            server_cert = uacrypto.x509_from_der(chosen.ServerCertificate)
            if server_cert is None:
                raise OpcUaSecurityError(
                    f"OPC UA server {endpoint} sent no certificate for {self.name}"
                )
            await self.trust.check(server_cert, endpoint)
            client.application_uri = self.certificate.application_uri
            await client.set_security(
                self.policy,
                self.certificate.certificate,
                self.certificate.private_key,
                server_certificate=uacrypto.der_from_x509(server_cert),
                mode=self.mode,
            )
        identity = self.identity
        if identity.username is not None:
            assert identity.password is not None
            client.set_user(identity.username)
            client.set_password(identity.password)
        elif identity.certificate is not None:
            assert identity.private_key is not None
            await client.load_client_certificate(str(identity.certificate))
            await client.load_private_key(identity.private_key)

    async def _endpoint(self, client: Client, endpoint: str) -> ua.EndpointDescription:
        uri = (self.policy or security_policies.SecurityPolicyNone).URI
        mode = self.mode if self.policy is not None else ua.MessageSecurityMode.None_
        endpoints = await client.connect_and_get_server_endpoints()
        for candidate in endpoints:
            if candidate.SecurityPolicyUri == uri and candidate.SecurityMode == mode:
                return candidate
        offered = sorted({_describe(e) for e in endpoints}) or ["nothing"]
        raise OpcUaSecurityError(
            f"OPC UA server {endpoint} offers no {self.name} endpoint (it offers "
            f"{', '.join(offered)}); set TWINFORGE_OPCUA_SECURITY to one of those"
        )


#: No signing, no encryption, anonymous: only for servers configured so on purpose.
NO_SECURITY = ClientSecurity(None, ua.MessageSecurityMode.None_)


def parse_security(
    text: str,
) -> tuple[type[security_policies.SecurityPolicy] | None, ua.MessageSecurityMode]:
    """``Policy,Mode`` (or ``None``) as TWINFORGE_OPCUA_SECURITY spells it."""
    if text.strip() == "None":
        return None, ua.MessageSecurityMode.None_
    policy, _, mode = (part.strip() for part in text.partition(","))
    if policy not in POLICIES or mode not in MODES:
        raise ValueError(
            f"TWINFORGE_OPCUA_SECURITY: must be Policy,Mode with Policy one of "
            f"{', '.join(POLICIES)} and Mode one of {', '.join(MODES)} (or None for no "
            f"security), got {text!r}"
        )
    return POLICIES[policy], MODES[mode]


def client_security(settings: Settings) -> ClientSecurity:
    """The one security config of the OPC UA clients, from the settings; bad values raise
    ValueError naming the TWINFORGE_ variable and the rule."""
    policy, mode = parse_security(settings.opcua_security)
    identity = _identity(settings)
    if policy is None:
        if identity.username is not None:
            log.warning(
                "TWINFORGE_OPCUA_SECURITY=None: the OPC UA password may cross the network "
                "unencrypted"
            )
        return ClientSecurity(None, mode, identity=identity)
    base = settings.data_dir / "opcua"
    trusted = settings.opcua_trust_dir or base / "trusted"
    trust = TrustList(
        trusted, trusted.parent / "rejected", trust_on_first_use=settings.opcua_trust_on_first_use
    )
    return ClientSecurity(policy, mode, _application_certificate(settings, base), trust, identity)


def _application_certificate(settings: Settings, base: Path) -> ApplicationCertificate:
    cert, key = settings.opcua_certificate, settings.opcua_private_key
    if (cert is None) != (key is None):
        raise ValueError(
            "TWINFORGE_OPCUA_CERTIFICATE and TWINFORGE_OPCUA_PRIVATE_KEY: set both or neither"
        )
    if cert is not None and key is not None:
        return load_application_certificate(
            cert,
            key,
            cert_setting="TWINFORGE_OPCUA_CERTIFICATE",
            key_setting="TWINFORGE_OPCUA_PRIVATE_KEY",
        )
    return application_certificate(base / "own", f"urn:{socket.gethostname()}:twinforge")


def _identity(settings: Settings) -> Identity:
    user_cert, user_key = settings.opcua_user_certificate, settings.opcua_user_private_key
    if (user_cert is None) != (user_key is None):
        raise ValueError(
            "TWINFORGE_OPCUA_USER_CERTIFICATE and TWINFORGE_OPCUA_USER_PRIVATE_KEY: set both "
            "or neither"
        )
    secret, secret_file = settings.opcua_password, settings.opcua_password_file
    if secret is not None and secret_file is not None:
        raise ValueError(
            "TWINFORGE_OPCUA_PASSWORD and TWINFORGE_OPCUA_PASSWORD_FILE: set one, not both"
        )
    username = settings.opcua_username
    if username is None:
        if secret is not None or secret_file is not None:
            raise ValueError("TWINFORGE_OPCUA_USERNAME: needed with a password")
        for path, name in ((user_cert, "USER_CERTIFICATE"), (user_key, "USER_PRIVATE_KEY")):
            if path is not None and not path.is_file():
                raise ValueError(f"TWINFORGE_OPCUA_{name}: no such file {path}")
        return Identity(certificate=user_cert, private_key=user_key)
    if user_cert is not None:
        raise ValueError(
            "TWINFORGE_OPCUA_USERNAME and TWINFORGE_OPCUA_USER_CERTIFICATE: one identity, not both"
        )
    if not username:
        raise ValueError("TWINFORGE_OPCUA_USERNAME: must not be empty")
    if secret_file is not None:
        try:
            password = secret_file.read_text(encoding="utf-8").removesuffix("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"TWINFORGE_OPCUA_PASSWORD_FILE: cannot read {secret_file}: {exc}"
            ) from None
    elif secret is not None:
        password = secret.get_secret_value()
    else:
        raise ValueError(
            "TWINFORGE_OPCUA_PASSWORD or TWINFORGE_OPCUA_PASSWORD_FILE: needed with "
            "TWINFORGE_OPCUA_USERNAME"
        )
    if not password:
        raise ValueError("TWINFORGE_OPCUA_PASSWORD: must not be empty")
    return Identity(username=username, password=password)


def _describe(endpoint: ua.EndpointDescription) -> str:
    if endpoint.SecurityMode == ua.MessageSecurityMode.None_:
        return "None"
    policy = endpoint.SecurityPolicyUri.rsplit("#", 1)[-1]
    return f"{policy},{endpoint.SecurityMode.name}"
