"""The client's OPC UA application certificate and the list of servers it trusts.

OPC UA authenticates applications, not hosts: each side presents an application-instance
certificate whose SubjectAltName carries its application URI, and each side keeps a trust
list. Ours follows the usual PKI folder layout: certificates in the trust directory are
trusted (exactly, or as the CA that issued the server's), and a refused server's
certificate is saved to a ``rejected`` folder beside it, so trusting it is one ``mv``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua.crypto import cert_gen
from asyncua.crypto.truststore import TrustStore
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "ApplicationCertificate",
    "OpcUaSecurityError",
    "TrustList",
    "application_certificate",
    "load_application_certificate",
    "thumbprint",
]

log = logging.getLogger(__name__)

#: Generated certificates live this long; an expired one is made again (a new thumbprint
#: that servers must trust anew), so not too short, and not forever either.
GENERATED_VALIDITY_DAYS = 2 * 365
CERTIFICATE_NAME = "certificate.der"
PRIVATE_KEY_NAME = "private_key.pem"


class OpcUaSecurityError(ConnectionError):
    """A connection refused for security's sake (identity, certificate, trust, policy):
    someone must change a setting or a trust list; retrying alone will not help."""


@dataclass(frozen=True, slots=True)
class ApplicationCertificate:
    """twinforge's OPC UA application-instance certificate (DER or PEM) and its key (PEM)."""

    certificate: Path
    private_key: Path
    application_uri: str
    thumbprint: str


def thumbprint(cert: x509.Certificate) -> str:
    """The SHA-1 of the DER form, in hex: how OPC UA tools name a certificate."""
    return hashlib.sha1(cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest()


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The first URI in the SubjectAltName (OPC UA puts the application URI there)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def application_certificate(directory: Path, application_uri: str) -> ApplicationCertificate:
    """The certificate generated in ``directory`` on an earlier start, else a new one.

    The key is written owner-only (0600) before anyone could read it; the certificate is
    self-signed, for client use, with ``application_uri`` and this host in its
    SubjectAltName. An expired certificate is made again from the same key.
    """
    cert_path, key_path = directory / CERTIFICATE_NAME, directory / PRIVATE_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc > datetime.now(UTC):
            return _described(cert, cert_path, key_path)
        log.warning("OPC UA application certificate %s expired; making a new one", cert_path)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if key_path.is_file():
        key = _rsa_key(key_path.read_bytes(), str(key_path))
    else:
        key = cert_gen.generate_private_key()
        _write_atomically(key_path, cert_gen.dump_private_key_as_pem(key), 0o600)
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        application_uri,
        {"organizationName": "twinforge"},
        names,
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=GENERATED_VALIDITY_DAYS,
    )
    _write_atomically(cert_path, cert.public_bytes(Encoding.DER), 0o644)
    described = _described(cert, cert_path, key_path)
    log.info(
        "made OPC UA application certificate %s (thumbprint %s): add it to the servers' "
        "trusted certificates",
        cert_path,
        described.thumbprint,
    )
    return described


def load_application_certificate(
    cert_path: Path, key_path: Path, *, cert_setting: str, key_setting: str
) -> ApplicationCertificate:
    """A certificate and key given by configuration, checked: readable, not expired, an
    application URI in its SubjectAltName, and the key belonging to it. Errors name the
    settings."""
    try:
        data = cert_path.read_bytes()
        cert = (
            x509.load_pem_x509_certificate(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"{cert_setting}: cannot read a certificate from {cert_path}: {exc}"
        ) from None
    if cert.not_valid_after_utc <= datetime.now(UTC):
        raise ValueError(
            f"{cert_setting}: {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    if application_uri_of(cert) is None:
        raise ValueError(
            f"{cert_setting}: {cert_path} has no URI in its SubjectAltName; OPC UA requires "
            "the application URI there"
        )
    try:
        key = _rsa_key(key_path.read_bytes(), key_setting)
    except OSError as exc:
        raise ValueError(f"{key_setting}: cannot read {key_path}: {exc}") from None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ValueError(f"{key_setting}: {key_path} is not the key of {cert_setting} {cert_path}")
    return _described(cert, cert_path, key_path)


class TrustList:
    """The server certificates (or their CAs) a client accepts, read from ``trusted`` on
    every check so that a certificate moved there counts without a restart.

    With ``trust_on_first_use``, an empty ``trusted`` folder takes the first server's
    certificate (logged with its thumbprint) and from then on trusts only that one.
    """

    def __init__(self, trusted: Path, rejected: Path, *, trust_on_first_use: bool = False) -> None:
        self.trusted = trusted
        self.rejected = rejected
        self.trust_on_first_use = trust_on_first_use

    async def check(self, cert: x509.Certificate, endpoint: str) -> None:
        """Return when ``cert`` is trusted, else save it to ``rejected`` and raise
        :class:`OpcUaSecurityError` saying how to trust it."""
        print_ = thumbprint(cert)
        if cert.not_valid_after_utc <= datetime.now(UTC):
            raise OpcUaSecurityError(
                f"OPC UA server {endpoint}: its certificate (thumbprint {print_}) expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d}"
            )
        self.trusted.mkdir(parents=True, exist_ok=True, mode=0o700)
        known = _certificate_files(self.trusted)
        if self.trust_on_first_use and not known:
            _write_atomically(
                self.trusted / f"{print_}.der", cert.public_bytes(Encoding.DER), 0o644
            )
            log.warning(
                "OPC UA server %s trusted on first use: certificate thumbprint %s saved to %s",
                endpoint,
                print_,
                self.trusted,
            )
            return
        if known:
            store = TrustStore([self.trusted], [])
            await store.load_trust()
            if store.is_trusted(cert):
                return
        self.rejected.mkdir(parents=True, exist_ok=True, mode=0o700)
        saved = self.rejected / f"{print_}.der"
        _write_atomically(saved, cert.public_bytes(Encoding.DER), 0o644)
        raise OpcUaSecurityError(
            f"OPC UA server {endpoint}: its certificate (thumbprint {print_}, subject "
            f"{cert.subject.rfc4514_string()}) is not trusted: it is not in "
            f"TWINFORGE_OPCUA_TRUST_DIR ({self.trusted}) nor issued by a CA there; if it is "
            f"the right server, move {saved} into that folder"
        )


def _certificate_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.suffix.lower() in {".der", ".pem"}]


def _described(cert: x509.Certificate, cert_path: Path, key_path: Path) -> ApplicationCertificate:
    uri = application_uri_of(cert)
    assert uri is not None  # generated with one, or checked before
    return ApplicationCertificate(cert_path, key_path, uri, thumbprint(cert))


def _rsa_key(data: bytes, where: str) -> rsa.RSAPrivateKey:
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(
            f"{where}: OPC UA's RSA policies need an RSA key, got {type(key).__name__}"
        )
    return key


def _public_der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temporary file created with ``mode`` (so a private
    key is never readable by others, not even for a moment) and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
