"""FMU physics: building twinforge's and users' Co-Simulation FMUs (FMI 2.0 and 3.0) from
their sources, reading their descriptions, and stepping instances of them through fmpy;
every failure is a :class:`FmuError` that names the FMU, the instance, the call and the
time."""

from twinforge.physics.build import build_fmu, default_cache_dir, ensure_binary
from twinforge.physics.errors import FmuError, PhysicsConfigError, PhysicsError
from twinforge.physics.fmi import FmuInstance, LoadedFmu
from twinforge.physics.model_description import read_description

__all__ = [
    "FmuError",
    "FmuInstance",
    "LoadedFmu",
    "PhysicsConfigError",
    "PhysicsError",
    "build_fmu",
    "default_cache_dir",
    "ensure_binary",
    "read_description",
]
