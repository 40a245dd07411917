"""The simulated plant as a part of a running demo: the simulator on a thread of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from twinforge.sim.layout import PlantLayout
from twinforge.sim.simulator import PlantSimulator

__all__ = ["SimulatorPart", "start_simulator"]


@dataclass
class SimulatorPart:
    simulator: PlantSimulator
    endpoints: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> PlantLayout:
        return self.simulator.layout

    def stop(self) -> None:
        self.simulator.stop_background()


def start_simulator(simulator: PlantSimulator) -> SimulatorPart:
    """Run ``simulator`` in the background until the part is stopped."""
    simulator.start_background()
    return SimulatorPart(simulator)
