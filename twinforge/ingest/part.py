"""Ingest's part of a running server: validation, dead letters and the pipeline that
hands durable messages to the asset hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twinforge.ingest.dead_letters import DeadLetterBudget, DeadLetterStore
from twinforge.ingest.pipeline import IngestPipeline, Router
from twinforge.ingest.validation import TelemetryValidator
from twinforge.lifecycle import stop_each
from twinforge.metrics import ServerMetrics
from twinforge.runtime.events import EventBus, EventKind, TwinEvent
from twinforge.twin_models.elements import Interface

__all__ = ["IngestPart", "start_ingest"]


@dataclass
class IngestPart:
    dead_letters: DeadLetterStore
    validator: TelemetryValidator
    pipeline: IngestPipeline
    endpoints: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_each((self.pipeline.close, self.dead_letters.close))

    def on_model_change(self, event: TwinEvent) -> None:
        """Listener for the twin service's bus: a model added or deleted changes what
        each twin's messages are checked against."""
        if event.kind in (EventKind.MODEL_CREATED, EventKind.MODEL_DELETED):
            self.validator.forget()


def start_ingest(
    data_dir: Path,
    *,
    model_of: Callable[[str], str | None],
    interface_of: Callable[[str], Interface | None],
    router: Router,
    metrics: ServerMetrics,
    live: EventBus,
    dead_letter_budget: DeadLetterBudget | None = None,
) -> IngestPart:
    """The pipeline into ``router`` (the asset fleet), dead letters kept in ``data_dir``
    within ``dead_letter_budget``, a quota for each twin ``model_of`` knows."""
    dead_letters = DeadLetterStore.in_data_dir(
        data_dir,
        budget=dead_letter_budget,
        is_known_twin=lambda twin_id: model_of(twin_id) is not None,
        on_drop=metrics.dead_letters_dropped,
    )
    validator = TelemetryValidator(model_of, interface_of)
    pipeline = IngestPipeline(validator, router, dead_letters, metrics, live=live)
    return IngestPart(dead_letters, validator, pipeline)
