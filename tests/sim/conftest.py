"""The sample plant, with this run's twin ids, for the simulated plant's tests."""

from __future__ import annotations

import pytest
from support.sim_run import RUN

from twinforge.sim.layout import PlantLayout, sample_plant


@pytest.fixture(scope="module")
def layout() -> PlantLayout:
    return sample_plant(24, id_prefix=RUN)
