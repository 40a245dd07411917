"""OPC UA security against a real asyncua server that refuses insecure connections: the
simulated PLC, serving only signed or encrypted endpoints to one user with a password.

RSA keys are slow to make, so the PLC's and twinforge's certificates are made once per
module; each test gets its own data dir and trust folder.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, Server, ua
from asyncua.crypto import security_policies
from asyncua.server.user_managers import CertificateUserManager
from cryptography import x509
from support.opcua_intake import RecordingIntake

from twinforge.config import Settings
from twinforge.connectivity.opcua.certificates import (
    ApplicationCertificate,
    application_certificate,
    thumbprint,
)
from twinforge.connectivity.opcua.part import OpcUaPart, start_opcua
from twinforge.connectivity.opcua.security import (
    NO_SECURITY,
    OpcUaSecurityError,
    client_security,
)
from twinforge.sim.layout import CNC, sample_plant
from twinforge.sim.opcua_security import PlcSecurity
from twinforge.sim.simulator import PlantSimulator

USER, PASSWORD = "line-1", "correct horse battery staple"


@pytest.fixture(scope="module")
def layout() -> Any:
    return sample_plant(equipment=2)


@pytest.fixture(scope="module")
def plc(layout: Any) -> Iterator[PlantSimulator]:
    sim = PlantSimulator(
        layout,
        mqtt_endpoint=None,
        opcua_port=0,
        opcua_security=PlcSecurity({USER: PASSWORD}),
        rate_hz=5,
    )
    sim.start_background()
    yield sim
    sim.stop_background()


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir whose generated application certificate the other tests reuse."""
    data_dir = tmp_path_factory.mktemp("own")
    client_security(Settings(data_dir=data_dir))
    return data_dir


@pytest.fixture
def settings(tmp_path: Path, own: Path, plc: PlantSimulator) -> Any:
    """Settings for a client that trusts the PLC, with the right password."""
    trusted = tmp_path / "pki" / "trusted"
    trusted.mkdir(parents=True)
    assert plc.opcua_security is not None
    (trusted / "plc.der").write_bytes(plc.opcua_security.certificate)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "opcua_url": plc.opcua_endpoint,
            "opcua_username": USER,
            "opcua_password": PASSWORD,
            "opcua_trust_dir": trusted,
            "opcua_certificate": own / "opcua" / "own" / "certificate.der",
            "opcua_private_key": own / "opcua" / "own" / "private_key.pem",
        }
        return Settings(**(values | overrides))

    return make


def cnc_of(layout: Any) -> str:
    return layout.of_model(CNC)[0].id


def test_an_insecure_client_is_refused(plc: PlantSimulator) -> None:
    async def plain() -> None:
        async with Client(plc.opcua_endpoint, timeout=5) as client:
            await client.nodes.objects.read_browse_name()

    # asyncua's own client gives up: the server lists no None endpoint.
    with pytest.raises(ua.UaError, match="No matching endpoints"):
        asyncio.run(plain())

    async def session_on_the_discovery_channel() -> None:
        # What a client that ignores the endpoint list would do: a session on the
        # unsecured channel, with the right password in clear text.
        client = Client(plc.opcua_endpoint, timeout=5)
        await client.connect_socket()
        try:
            await client.send_hello()
            await client.open_secure_channel()
            params = ua.CreateSessionParameters(
                ClientNonce=b"n" * 32,
                ClientDescription=ua.ApplicationDescription(),
                EndpointUrl=plc.opcua_endpoint,
                SessionName="intruder",
                RequestedSessionTimeout=10_000,
            )
            await client.uaclient.create_session(params)
            token = ua.UserNameIdentityToken(
                PolicyId="username", UserName=USER, Password=PASSWORD.encode()
            )
            activate = ua.ActivateSessionParameters(UserIdentityToken=token)
            await client.uaclient.activate_session(activate)
        finally:
            client.disconnect_socket()

    with pytest.raises(ua.UaStatusCodeError) as refused:
        asyncio.run(session_on_the_discovery_channel())
    assert ua.StatusCode(refused.value.code).name == "BadUserAccessDenied"

    async def ours() -> None:
        await NO_SECURITY.connect(Client(plc.opcua_endpoint, timeout=5))

    with pytest.raises(OpcUaSecurityError, match="offers no None endpoint") as refused:
        asyncio.run(ours())
    assert "Basic256Sha256,SignAndEncrypt" in str(refused.value)
    assert "TWINFORGE_OPCUA_SECURITY" in str(refused.value)


@pytest.mark.parametrize(
    ("setting", "policy", "mode"),
    [
        ("Basic256Sha256,Sign", security_policies.SecurityPolicyBasic256Sha256, "Sign"),
        (
            "Basic256Sha256,SignAndEncrypt",
            security_policies.SecurityPolicyBasic256Sha256,
            "SignAndEncrypt",
        ),
        (
            "Aes128_Sha256_RsaOaep,SignAndEncrypt",
            security_policies.SecurityPolicyAes128Sha256RsaOaep,
            "SignAndEncrypt",
        ),
        (
            "Aes256_Sha256_RsaPss,SignAndEncrypt",
            security_policies.SecurityPolicyAes256Sha256RsaPss,
            "SignAndEncrypt",
        ),
    ],
)
def test_each_policy_ingests_telemetry_and_runs_a_command(
    settings: Any,
    plc: PlantSimulator,
    layout: Any,
    setting: str,
    policy: type[security_policies.SecurityPolicy],
    mode: str,
) -> None:
    config = settings(opcua_security=setting)
    security = client_security(config)
    assert security.name == setting

    async def channel() -> tuple[str, ua.MessageSecurityMode, str]:
        client = Client(plc.opcua_endpoint, timeout=10)
        await security.connect(client)
        try:
            name = await client.nodes.objects.read_browse_name()
            return client.security_policy.URI, client.security_policy.Mode, name.Name
        finally:
            await client.disconnect()

    assert asyncio.run(channel()) == (policy.URI, ua.MessageSecurityMode[mode], "Objects")

    intake = RecordingIntake()
    cnc = cnc_of(layout)
    part = start_opcua(config, intake)
    try:
        # One security config for both directions.
        assert part.ingest.security is part.commands.security
        assert part.ingest.wait_connected(15)
        offer = intake.wait_offer(twin_id=cnc, timeout=15)
        assert offer["origin"].startswith("opcua:")
        reply = asyncio.run(part.commands.send(cnc, "setSpindleSpeed", 6500, timeout=10))
        assert reply.ok, reply
        assert plc.physics.state(cnc)["spindleSetpoint"] == 6500
    finally:
        part.stop()


def test_a_wrong_password_fails_the_start_with_a_clear_error(settings: Any) -> None:
    with pytest.raises(OpcUaSecurityError) as refused:
        start_opcua(settings(opcua_password="not the password"), RecordingIntake())
    message = str(refused.value)
    assert f"refused user {USER!r}" in message and "BadUserAccessDenied" in message
    assert "TWINFORGE_OPCUA_PASSWORD" in message
    assert "not the password" not in message


def test_a_server_certificate_not_in_the_trust_list_is_refused(
    settings: Any, plc: PlantSimulator, tmp_path: Path
) -> None:
    empty = tmp_path / "elsewhere" / "trusted"
    config = settings(opcua_trust_dir=empty, opcua_mappings=None)
    with pytest.raises(OpcUaSecurityError, match="is not trusted") as refused:
        start_opcua(config, RecordingIntake())
    assert plc.opcua_security is not None
    plc_cert = x509.load_der_x509_certificate(plc.opcua_security.certificate)
    message = str(refused.value)
    assert thumbprint(plc_cert) in message and "TWINFORGE_OPCUA_TRUST_DIR" in message
    # Saved where an operator can look at it and trust it with one move.
    saved = empty.parent / "rejected" / f"{thumbprint(plc_cert)}.der"
    assert saved.read_bytes() == plc.opcua_security.certificate
    shutil.move(saved, empty / saved.name)
    start_opcua(config, RecordingIntake()).stop()


def test_trust_on_first_use_pins_the_first_server(
    settings: Any, plc: PlantSimulator, tmp_path: Path
) -> None:
    empty = tmp_path / "tofu" / "trusted"
    part: OpcUaPart = start_opcua(
        settings(opcua_trust_dir=empty, opcua_trust_on_first_use=True), RecordingIntake()
    )
    part.stop()
    assert [p.suffix for p in empty.iterdir()] == [".der"]

    # Pinned: were the PLC's certificate another (a swapped server), it is refused.
    (pinned,) = empty.iterdir()
    assert plc.opcua_security is not None
    assert pinned.read_bytes() == plc.opcua_security.certificate
    pinned.write_bytes(PlcSecurity({USER: PASSWORD}).certificate)
    with pytest.raises(OpcUaSecurityError, match="is not trusted"):
        start_opcua(
            settings(opcua_trust_dir=empty, opcua_trust_on_first_use=True), RecordingIntake()
        )


def test_the_application_certificate_is_made_once_with_a_private_key(
    own: Path,
) -> None:
    first = client_security(Settings(data_dir=own)).certificate
    again = client_security(Settings(data_dir=own)).certificate
    assert first is not None and again is not None
    assert first.thumbprint == again.thumbprint
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(first.certificate.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [first.application_uri]
    assert thumbprint(cert) == first.thumbprint


def test_bad_settings_name_the_variable_and_the_rule(tmp_path: Path, own: Path) -> None:
    cases = [
        ({"opcua_security": "Basic128Rsa15,Sign"}, "TWINFORGE_OPCUA_SECURITY: must be Policy,Mode"),
        ({"opcua_security": "Basic256Sha256"}, "TWINFORGE_OPCUA_SECURITY"),
        ({"opcua_username": "u"}, "TWINFORGE_OPCUA_PASSWORD or TWINFORGE_OPCUA_PASSWORD_FILE"),
        ({"opcua_password": "p"}, "TWINFORGE_OPCUA_USERNAME: needed"),
        (
            {"opcua_certificate": own / "opcua" / "own" / "certificate.der"},
            "TWINFORGE_OPCUA_CERTIFICATE and TWINFORGE_OPCUA_PRIVATE_KEY: set both",
        ),
        (
            {
                "opcua_certificate": tmp_path / "missing.der",
                "opcua_private_key": tmp_path / "missing.pem",
            },
            "TWINFORGE_OPCUA_CERTIFICATE: cannot read",
        ),
    ]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            client_security(Settings(data_dir=tmp_path, **values))


def test_the_password_may_come_from_a_file(settings: Any, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    part = start_opcua(settings(opcua_password=None, opcua_password_file=secret), RecordingIntake())
    part.stop()
    assert PASSWORD not in repr(
        client_security(settings(opcua_password=None, opcua_password_file=secret))
    )


def test_a_user_certificate_is_the_session_identity(tmp_path: Path, own: Path) -> None:
    robot = application_certificate(tmp_path / "robot", "urn:test:robot")
    stranger = application_certificate(tmp_path / "stranger", "urn:test:stranger")
    port = _free_port()
    url = f"opc.tcp://127.0.0.1:{port}/"

    def settings_for(user: ApplicationCertificate) -> Settings:
        trusted = tmp_path / "trusted"
        return Settings(
            data_dir=tmp_path,
            opcua_url=url,
            opcua_user_certificate=user.certificate,
            opcua_user_private_key=user.private_key,
            opcua_trust_dir=trusted,
            opcua_trust_on_first_use=True,
            opcua_certificate=own / "opcua" / "own" / "certificate.der",
            opcua_private_key=own / "opcua" / "own" / "private_key.pem",
        )

    async def scenario() -> None:
        users = CertificateUserManager()
        await users.add_user(robot.certificate, name="robot", format="der")
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(url)
        await PlcSecurity({"unused": "unused"}).apply(server)
        server.set_identity_tokens([ua.X509IdentityToken])
        async with server:
            client = Client(url, timeout=10)
            await client_security(settings_for(robot)).connect(client)
            try:
                assert (await client.nodes.objects.read_browse_name()).Name == "Objects"
            finally:
                await client.disconnect()
            with pytest.raises(OpcUaSecurityError, match="refused user certificate") as refused:
                await client_security(settings_for(stranger)).connect(Client(url, timeout=10))
            assert "BadUserAccessDenied" in str(refused.value)

    asyncio.run(scenario())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
