"""The twins' anomaly models in the API: each twin's last answers (``Twin.anomaly``),
and the models' registry versions, training, promotion and rollback (mutations). The
alerts they raise come through the existing alert subscription."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any, Protocol

import strawberry
from strawberry.scalars import JSON

from twinforge.errors import ClientError
from twinforge.graphql.errors import BadInput, NotFoundError
from twinforge.graphql.types import timestamp


class ModelService(Protocol):
    """The server's models (:class:`twinforge.actors.training.ModelService`)."""

    def anomaly_of(self, twin_ids: list[str]) -> dict[str, list[dict[str, Any]]]: ...

    def train(self, name: str, interface: str, hours: float, *, quick: bool = False) -> Any: ...

    def versions(self, name: str, interface: str) -> list[Any]: ...

    def promote(self, name: str, interface: str, version: int | None) -> Any: ...


@strawberry.type(description="A twin's anomaly model and its last answer.")
class TwinAnomaly:
    name: str = strawberry.field(description="The model's name (anomaly, energy...).")
    interface: str = strawberry.field(description="The interface it was trained for.")
    version: str = strawberry.field(description="The promoted registry version loaded.")
    mode: str = strawberry.field(
        description="model: the model scores the twin; rules: no model (missing, corrupt "
        "or failing), the twin's threshold alarm rules stand in, and reason says why."
    )
    reason: str | None
    detector: str | None
    score: float | None = strawberry.field(description="The last sample's anomaly score.")
    threshold: float | None = strawberry.field(description="Its alarm threshold.")
    level: str | None = strawberry.field(description="normal, warning or critical.")
    cluster: str | None = strawberry.field(
        description="The facility/item/setting cluster whose model scored it."
    )
    fallback_cluster: bool | None = strawberry.field(
        description="True: its setting was never trained, the nearest trained cluster "
        "scored it, with a threshold raised by the distance."
    )
    top_fields: list[str] = strawberry.field(
        description="Above the threshold: the features furthest from their training mean."
    )
    time: datetime | None

    @classmethod
    def of(cls, status: dict[str, Any]) -> TwinAnomaly:
        time = status["time"]
        return cls(
            name=status["name"],
            interface=status["interface"],
            version=status["version"],
            mode=status["mode"],
            reason=status["reason"],
            detector=status["detector"],
            score=status["score"],
            threshold=status["threshold"],
            level=status["level"],
            cluster=status["cluster"],
            fallback_cluster=status["fallbackCluster"],
            top_fields=status["topFields"],
            time=None if time is None else timestamp(time),
        )


@strawberry.type(description="A version of a model in the registry (MLflow).")
class ModelVersionInfo:
    name: str
    version: int
    run_id: str
    created: datetime
    champion: bool = strawberry.field(description="The promoted version hosts run.")
    metrics: JSON
    data_window: JSON = strawberry.field(description="The twins and times it trained on.")

    @classmethod
    def of(cls, version: Any) -> ModelVersionInfo:
        return cls(
            name=version.name,
            version=version.version,
            run_id=version.run_id,
            created=timestamp(version.created),
            champion=version.promoted,
            metrics=version.metrics,
            data_window=version.data_window,
        )


async def twin_anomaly(info: strawberry.Info, twin_id: str) -> list[TwinAnomaly]:
    return [TwinAnomaly.of(s) for s in await info.context.loaders.anomaly.load(twin_id)]


def service_of(info: strawberry.Info) -> ModelService:
    service = info.context.services.models
    if service is None:
        raise NotFoundError("models: this server has no model configuration (TWINFORGE_ML)")
    return service


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a model service call off the event loop; its client errors name the field."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ClientError:  # the registry's: they name their field already
        raise
    except LookupError as error:
        raise NotFoundError(str(error).strip("'\"")) from None
    except ValueError as error:
        raise BadInput(str(error)) from None


def check_hours(hours: float) -> float:
    if not (math.isfinite(hours) and 0 < hours <= 24 * 366):
        raise BadInput(f"hours: must be a number of hours in (0, 8784], got {hours}", field="hours")
    return hours
