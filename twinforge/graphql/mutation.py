"""The Mutation root: DTDL models, twins, relationships, commands and API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from twinforge.auth.devices import DeviceStore
from twinforge.auth.durations import parse_duration
from twinforge.auth.roles import parse_roles
from twinforge.graphql import anomaly
from twinforge.graphql.anomaly import ModelVersionInfo
from twinforge.graphql.errors import BadInput, Forbidden, NotFoundError
from twinforge.graphql.permissions import Admin, Engineer, Operator
from twinforge.graphql.physics import BoundFmu, PhysicsService, WhatIfRun, bind, run_what_if
from twinforge.graphql.query import api_key
from twinforge.graphql.types import (
    Command,
    DeviceCredential,
    IssuedApiKey,
    IssuedDeviceCredential,
    IssuedToken,
    Model,
    Relationship,
    TwinNode,
)
from twinforge.runtime.commands import (
    ApprovalError,
    CommandNotFound,
    CommandRecord,
    CommandService,
)


@strawberry.type
class Mutation:
    # -- models ---------------------------------------------------------------------

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Upload DTDL interfaces, validated together with the stored ones; "
        "the schema gains their types for the next request.",
    )
    async def upload_models(self, info: strawberry.Info, models: list[JSON]) -> list[Model]:
        context = info.context
        stored = await asyncio.to_thread(context.services.twins.models.upload, models)
        await _audit(info, "model.upload", "models", {"ids": [s.id for s in stored]})
        types = context.refreshed_types()
        return [types.model(s) for s in stored]

    @strawberry.mutation(
        permission_classes=[Engineer], description="No new twins of this model from now on."
    )
    async def decommission_model(self, info: strawberry.Info, id: str) -> Model:
        stored = await asyncio.to_thread(info.context.services.twins.models.decommission, id)
        await _audit(info, "model.decommission", f"model:{id}")
        return info.context.schema_types.model(stored)

    @strawberry.mutation(
        permission_classes=[Admin],
        description="Delete a model no twin and no other model uses.",
    )
    async def delete_model(self, info: strawberry.Info, id: str) -> bool:
        await asyncio.to_thread(info.context.services.twins.models.delete, id)
        await _audit(info, "model.delete", f"model:{id}")
        info.context.refreshed_types()
        return True

    # -- twins and relationships ----------------------------------------------------

    @strawberry.mutation(permission_classes=[Engineer])
    async def create_twin(self, info: strawberry.Info, id: str, document: JSON) -> TwinNode:
        twins = info.context.services.twins
        created = await asyncio.to_thread(twins.create_twin, id, _object(document, "document"))
        await _audit(info, "twin.create", f"twin:{id}")
        return info.context.schema_types.twin(created)

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Apply a JSON Patch (RFC 6902); ifMatch makes it conditional on the etag.",
    )
    async def patch_twin(
        self,
        info: strawberry.Info,
        id: str,
        patch: list[JSON],
        if_match: str | None = None,
    ) -> TwinNode:
        twins = info.context.services.twins
        patched = await asyncio.to_thread(twins.patch_twin, id, patch, if_match=if_match)
        await _audit(info, "twin.update", f"twin:{id}", {"patch": patch})
        return info.context.schema_types.twin(patched)

    @strawberry.mutation(permission_classes=[Engineer])
    async def delete_twin(
        self, info: strawberry.Info, id: str, if_match: str | None = None
    ) -> bool:
        await asyncio.to_thread(info.context.services.twins.delete_twin, id, if_match=if_match)
        await _audit(info, "twin.delete", f"twin:{id}")
        return True

    @strawberry.mutation(permission_classes=[Engineer])
    async def create_relationship(
        self,
        info: strawberry.Info,
        source_id: str,
        id: str,
        name: str,
        target_id: str,
        properties: JSON | None = None,
    ) -> Relationship:
        document = {
            **_object(properties or {}, "properties"),
            "$relationshipName": name,
            "$targetId": target_id,
        }
        twins = info.context.services.twins
        created = await asyncio.to_thread(twins.create_relationship, source_id, id, document)
        await _audit(
            info,
            "relationship.create",
            f"relationship:{source_id}/{id}",
            {"name": name, "target": target_id},
        )
        return Relationship(doc=created)

    @strawberry.mutation(permission_classes=[Engineer])
    async def delete_relationship(
        self, info: strawberry.Info, source_id: str, id: str, if_match: str | None = None
    ) -> bool:
        twins = info.context.services.twins
        await asyncio.to_thread(twins.delete_relationship, source_id, id, if_match=if_match)
        await _audit(info, "relationship.delete", f"relationship:{source_id}/{id}")
        return True

    # -- commands -------------------------------------------------------------------

    @strawberry.mutation(
        permission_classes=[Operator],
        description="Invoke a DTDL command: checked against its request schema and the "
        "safety policy, sent to the machine, audited. Hazardous commands wait for approval.",
    )
    async def invoke_command(
        self, info: strawberry.Info, twin_id: str, name: str, request: JSON | None = None
    ) -> Command:
        service = _commands(info)
        record = await service.invoke(info.context.principal, twin_id, name, request)
        return Command(record=record)

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Approve somebody else's pending command, which is then sent.",
    )
    async def approve_command(self, info: strawberry.Info, id: str) -> Command:
        service = _commands(info)
        return await _decided(service.approve(info.context.principal, id))

    @strawberry.mutation(
        permission_classes=[Operator],
        description="Reject a pending command (engineers and admins), or withdraw your own.",
    )
    async def reject_command(self, info: strawberry.Info, id: str, reason: str = "") -> Command:
        service = _commands(info)
        return await _decided(service.reject(info.context.principal, id, reason))

    # -- physics --------------------------------------------------------------------

    @strawberry.mutation(
        permission_classes=[Operator],
        description="A what-if run: the twin's FMU from where it stands, for horizonS "
        "seconds, with parameters and input profiles overridden; runs in a Ray task and "
        "never touches the live twin. profiles: {field: [[offsetS, value], ...]}, each "
        "value held from its offset on.",
    )
    async def simulate(
        self,
        info: strawberry.Info,
        twin_id: str,
        horizon_s: float,
        step_s: float | None = None,
        parameters: JSON | None = None,
        profiles: JSON | None = None,
    ) -> WhatIfRun:
        run = await run_what_if(_physics(info), twin_id, horizon_s, step_s, parameters, profiles)
        await _audit(info, "physics.simulate", f"twin:{twin_id}", {"horizon_s": horizon_s})
        return run

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Bind a new FMU version (its file in base64) to an interface, checked "
        "against its modelDescription and the interface; the running twins swap to it "
        "without a restart. binding: an entry of the physics configuration (inputs, "
        "parameters, expected, step_s, max_gap_s; default: the interface's current one).",
    )
    async def bind_fmu(
        self, info: strawberry.Info, interface: str, fmu: str, binding: JSON | None = None
    ) -> BoundFmu:
        bound = await bind(_physics(info), interface, fmu, binding)
        await _audit(info, "physics.bind", f"model:{interface}", {"sha256": bound.sha256})
        return bound

    # -- models ---------------------------------------------------------------------

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Train a model (name, interface: an entry of the model configuration) "
        "on the last `hours` of its twins' history, in a Ray task; logged to the registry "
        "as a new version, promoted (and loaded by the running hosts) if `promote`.",
    )
    async def train_model(
        self,
        info: strawberry.Info,
        name: str,
        interface: str,
        hours: float = 24.0,
        promote: bool = False,
    ) -> ModelVersionInfo:
        service = anomaly.service_of(info)
        version = await anomaly.call(service.train, name, interface, anomaly.check_hours(hours))
        await _audit(info, "ml.train", f"model:{version.name}", {"version": version.version})
        if promote:
            version = await anomaly.call(service.promote, name, interface, version.version)
            await _audit(info, "ml.promote", f"model:{version.name}", {"version": version.version})
        return ModelVersionInfo.of(version)

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Promote a registry version; the running hosts load it without a restart.",
    )
    async def promote_model(
        self, info: strawberry.Info, name: str, interface: str, version: int
    ) -> ModelVersionInfo:
        promoted = await anomaly.call(anomaly.service_of(info).promote, name, interface, version)
        await _audit(info, "ml.promote", f"model:{promoted.name}", {"version": version})
        return ModelVersionInfo.of(promoted)

    @strawberry.mutation(
        permission_classes=[Engineer],
        description="Promote again the version promoted before the current one.",
    )
    async def rollback_model(
        self, info: strawberry.Info, name: str, interface: str
    ) -> ModelVersionInfo:
        promoted = await anomaly.call(anomaly.service_of(info).promote, name, interface, None)
        await _audit(info, "ml.rollback", f"model:{promoted.name}", {"version": promoted.version})
        return ModelVersionInfo.of(promoted)

    # -- access ---------------------------------------------------------------------

    @strawberry.mutation(
        permission_classes=[Admin], description="A new API key; its secret is shown once."
    )
    async def create_api_key(
        self,
        info: strawberry.Info,
        name: str,
        roles: list[str],
        expires_in: Annotated[
            str | None,
            strawberry.argument(description="How long the key lives: 90m, 12h, 30d, 2w."),
        ] = None,
    ) -> IssuedApiKey:
        keys = info.context.services.keys
        expires = None
        if expires_in is not None:
            expires = datetime.now(UTC) + parse_duration(expires_in, field="expiresIn")
        issued = await asyncio.to_thread(keys.create, name, roles, expires=expires)
        await _audit(
            info,
            "key.create",
            f"key:{issued.key_id}",
            {"name": name, "roles": sorted(roles), "expires_in": expires_in},
        )
        return IssuedApiKey(key=api_key(keys.get(issued.key_id)), secret=issued.secret)

    @strawberry.mutation(permission_classes=[Admin])
    async def revoke_api_key(self, info: strawberry.Info, id: str) -> bool:
        revoked = await asyncio.to_thread(info.context.services.keys.revoke, id)
        await _audit(info, "key.revoke", f"key:{id}", outcome=_found(revoked))
        return revoked

    @strawberry.mutation(
        permission_classes=[Admin], description="A signed JWT bearer token for a user."
    )
    async def issue_token(
        self, info: strawberry.Info, subject: str, roles: list[str]
    ) -> IssuedToken:
        tokens = info.context.services.tokens
        issued = await asyncio.to_thread(tokens.issue_token, subject, parse_roles(roles))
        await _audit(
            info,
            "token.issue",
            f"token:{issued.jti}",
            {"subject": subject, "roles": sorted(roles), "expires": issued.expires},
        )
        return IssuedToken(
            token=issued.token,
            jti=issued.jti,
            subject=issued.subject,
            expires_at=datetime.fromtimestamp(issued.expires, UTC),
        )

    @strawberry.mutation(
        permission_classes=[Admin],
        description="Revoke a JWT by its jti: requests and open subscriptions with it fail "
        "from now on. False when no live token of this server has that jti.",
    )
    async def revoke_token(self, info: strawberry.Info, jti: str) -> bool:
        revocations = info.context.services.tokens.revocations
        if revocations is None:
            raise NotFoundError("jti: this server keeps no token revocation list")
        revoked = await asyncio.to_thread(revocations.revoke, jti)
        await _audit(info, "token.revoke", f"token:{jti}", outcome=_found(revoked))
        return revoked

    @strawberry.mutation(
        permission_classes=[Admin],
        description="A new MQTT credential for a plant device on the embedded broker, owning "
        "the twins it may report for; its password is shown once.",
    )
    async def create_device_credential(
        self, info: strawberry.Info, name: str, twins: list[str]
    ) -> IssuedDeviceCredential:
        issued = await asyncio.to_thread(_devices(info).create, name, twins)
        credential = issued.credential
        await _audit(
            info,
            "device.create",
            f"device:{credential.id}",
            {"name": name, "twins": sorted(credential.twins)},
        )
        return IssuedDeviceCredential(
            credential=DeviceCredential(
                id=strawberry.ID(credential.id),
                name=credential.name,
                kind=credential.kind,
                twins=sorted(credential.twins),
                created=credential.created,
                revoked=False,
            ),
            username=credential.id,
            password=issued.password,
        )

    @strawberry.mutation(
        permission_classes=[Admin],
        description="Revoke a device credential: the embedded broker closes its connections "
        "within seconds. False when no such credential is active.",
    )
    async def revoke_device_credential(self, info: strawberry.Info, id: str) -> bool:
        revoked = await asyncio.to_thread(_devices(info).revoke, id)
        await _audit(info, "device.revoke", f"device:{id}", outcome=_found(revoked))
        return revoked


async def _audit(
    info: strawberry.Info,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    *,
    outcome: str = "ok",
) -> None:
    """Record the request's principal doing ``action`` to ``target`` in the audit trail."""
    trail = info.context.services.audit
    if trail is not None:
        principal = info.context.principal
        await asyncio.to_thread(trail.record, principal, action, target, outcome, details)


def _found(done: bool) -> str:
    return "ok" if done else "not found"


def _devices(info: strawberry.Info) -> DeviceStore:
    store = info.context.services.devices
    if store is None:
        raise NotFoundError("devices: this server has no device credential store")
    return store


def _physics(info: strawberry.Info) -> PhysicsService:
    service = info.context.services.physics
    if service is None:
        raise NotFoundError("physics: this server runs no physics")
    return service


def _commands(info: strawberry.Info) -> CommandService:
    service = info.context.services.commands
    if service is None:
        raise NotFoundError("commands: this server has no command service")
    return service


async def _decided(decision: Awaitable[CommandRecord]) -> Command:
    """An approval or rejection, its refusals as API errors."""
    try:
        return Command(record=await decision)
    except CommandNotFound as error:
        raise NotFoundError(str(error)) from error
    except ApprovalError as error:
        raise Forbidden(str(error)) from error


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{field}: must be a JSON object, not {type(value).__name__}")
    return value
