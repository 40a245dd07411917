"""Throwaway TLS certificates (``cryptography``) for a broker on this machine: a CA, a
server certificate for 127.0.0.1/localhost, a client certificate, and the bad cases a
client must refuse (an expired server certificate, one for another host, one from a CA
nobody trusts).

Used by ``bench/ingest.py --tls`` and by the tests (``tests/support/certificates.py``);
kept out of the ``twinforge`` package because no user-facing command makes certificates
and ``cryptography`` is not a dependency of twinforge itself.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path  #: the CA certificate clients trust
    server: KeyPair  #: for 127.0.0.1 and localhost, signed by ``ca``
    client: KeyPair  #: a client identity (CN ``client_name``), signed by ``ca``
    expired: KeyPair  #: like ``server``, but expired yesterday
    wrong_host: KeyPair  #: signed by ``ca``, for ``elsewhere.invalid`` only
    unknown: KeyPair  #: for 127.0.0.1 and localhost, signed by a CA nobody trusts


def make_certificates(directory: Path, client_name: str = "plant-client") -> TlsFiles:
    """Write a CA and the certificates of :class:`TlsFiles` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca("twinforge test CA", now)
    other_key, other_cert = _ca("nobody's CA", now)
    local = ["127.0.0.1", "localhost"]
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        name: str, hosts: list[str], *, by=(ca_key, ca_cert), expired: bool = False
    ) -> KeyPair:
        start, end = (now - 30 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        return _write(directory, name, *_leaf(name, hosts, by, start, end))

    return TlsFiles(
        ca=ca_path,
        server=issue("server", local),
        client=issue(client_name, []),
        expired=issue("expired", local, expired=True),
        wrong_host=issue("wrong-host", ["elsewhere.invalid"]),
        unknown=issue("unknown", local, by=(other_key, other_cert)),
    )


def _ca(name: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 365 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    name: str,
    hosts: list[str],
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    start: datetime.datetime,
    end: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    issuer_key, issuer_cert = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.key.chmod(0o600)
    return pair
