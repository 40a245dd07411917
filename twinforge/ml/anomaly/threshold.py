"""The alarm threshold of a model, from its training score distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """``max(fixed, training max) * (1 + cv_weight * cv) + margin``, where ``cv`` is the
    coefficient of variation of the training scores: the molding practice's rule. A wide
    training distribution means a noisy model, so its threshold keeps more headroom.
    ``quantile`` below 1 takes that quantile for the maximum (a model whose training
    scores have a long tail)."""

    fixed: float = 0.0
    cv_weight: float = 0.0
    margin: float = 0.0
    quantile: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.quantile <= 1.0:
            raise ValueError(f"quantile: must be in [0.5, 1], got {self.quantile}")
        if self.cv_weight < 0:
            raise ValueError(f"cv_weight: must be >= 0, got {self.cv_weight}")

    def threshold(self, scores: np.ndarray) -> float:
        if len(scores) == 0:
            raise ValueError("scores: need the training scores to set a threshold")
        mean = float(np.mean(scores))
        cv = float(np.std(scores) / abs(mean)) if mean else 0.0
        top = float(np.quantile(scores, self.quantile))
        return max(self.fixed, top) * (1.0 + self.cv_weight * cv) + self.margin
