"""Running Co-Simulation FMUs (FMI 2.0 and 3.0) through fmpy: one :class:`LoadedFmu` per
FMU file and process (unpacked once, its binary shared), one :class:`FmuInstance` per
simulated machine.

Every FMI call that fails (status Error or Fatal, a missing function, an exception in the
binding) raises :class:`~twinforge.physics.errors.FmuError` naming the FMU, the instance,
the call and the simulation time; a non-finite output is an error too.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import math
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fmpy
from fmpy import calloc, free
from fmpy.fmi1 import FMICallException
from fmpy.fmi2 import (
    FMU2Slave,
    fmi2CallbackAllocateMemoryTYPE,
    fmi2CallbackFreeMemoryTYPE,
    fmi2CallbackFunctions,
    fmi2CallbackLoggerTYPE,
)
from fmpy.fmi3 import FMU3Slave
from fmpy.logging import addLoggerProxy

from twinforge.physics.build import ensure_binary
from twinforge.physics.errors import FmuError
from twinforge.physics.model_description import FmuDescription, Variable, read_description

__all__ = ["FmuInstance", "LoadedFmu"]


class LoadedFmu:
    """An FMU file ready to instantiate: built for this platform if it carried only
    sources, unpacked under ``work_dir`` (a temporary folder if None)."""

    def __init__(
        self, path: Path, *, work_dir: Path | None = None, cache_dir: Path | None = None
    ) -> None:
        self.source = Path(path)
        self.path = ensure_binary(self.source, cache_dir)
        data = self.path.read_bytes()
        self.digest = hashlib.sha256(data).hexdigest()
        self.description: FmuDescription = read_description(self.path)
        self._owned = work_dir is None
        self._fast: tuple[Any, ...] | None = None
        self._slave: Any = None
        root = Path(tempfile.mkdtemp(prefix="twinforge-fmu-")) if work_dir is None else work_dir
        self.unzip_dir = root / self.digest[:16]
        if not (self.unzip_dir / "modelDescription.xml").exists():
            root.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
            fmpy.extract(str(self.path), partial)
            try:
                partial.rename(self.unzip_dir)
            except OSError:  # another process unpacked it meanwhile
                shutil.rmtree(partial, ignore_errors=True)

    @property
    def name(self) -> str:
        return self.source.name

    def loaded_slave(self) -> Any:
        """fmpy's slave of this FMU, its library loaded (once per process), instantiated
        by none: instances are copies of it."""
        if self._slave is None:
            d = self.description
            cls = FMU3Slave if d.fmi_version == "3.0" else FMU2Slave
            self._slave = cls(
                guid=d.guid,
                unzipDirectory=str(self.unzip_dir),
                modelIdentifier=d.model_identifier,
                instanceName=d.model_identifier,
            )
        return self._slave

    def fast_functions(self, slave: Any) -> tuple[Any, Any, Any]:
        """setReal, getReal and doStep of the FMU's library, keeping the GIL; made once
        per FMU from ``slave``'s (fmpy has set their argument types), not per instance."""
        if self._fast is None:
            keeping_gil = ctypes.PyDLL(slave.dll._name)  # the same loaded library
            prefix = "fmi3" if self.description.fmi_version == "3.0" else "fmi2"
            real = "Float64" if prefix == "fmi3" else "Real"
            self._fast = tuple(
                _holding_gil(slave.dll, keeping_gil, f"{prefix}{name}")
                for name in (f"Set{real}", f"Get{real}", "DoStep")
            )
        return self._fast  # type: ignore[return-value]

    def instantiate(self, instance_name: str) -> FmuInstance:
        return FmuInstance(self, instance_name)

    def close(self) -> None:
        """Unload the library (after every instance has been closed)."""
        if self._slave is not None:
            with contextlib.suppress(Exception):
                self._slave.freeLibrary()
            self._slave = None
        if self._owned:
            shutil.rmtree(self.unzip_dir.parent, ignore_errors=True)


class FmuInstance:
    """One instance of an FMU, stepped on its own clock (``time``, seconds)."""

    def __init__(self, fmu: LoadedFmu, instance_name: str) -> None:
        self.fmu = fmu
        self.name = instance_name
        self.time = 0.0
        self.initialized = False
        self._fmi3 = fmu.description.fmi_version == "3.0"
        try:
            # A copy of the FMU's loaded slave: the library and fmpy's function table are
            # shared (an fmpy slave of its own costs an instance 44 KB), the instance's
            # own component is set by instantiate.
            self._slave: Any = copy.copy(fmu.loaded_slave())
        except Exception as error:
            raise FmuError(f"{self._where('load')}: cannot load the binary: {error}") from error
        self._slave.instanceName = instance_name
        # What the FMU logs about a failure goes into the error raised, not to stdout
        # (warnings, e.g. a clamped input, are dropped: nothing fails on them).
        self._messages: deque[str] = deque(maxlen=4)
        if self._fmi3:
            self._call(
                "instantiate", self._slave.instantiate, False, False, False, False, self._on_log3
            )
        else:
            self._callbacks = fmi2CallbackFunctions()
            self._callbacks.logger = fmi2CallbackLoggerTYPE(self._on_log2)
            self._callbacks.allocateMemory = fmi2CallbackAllocateMemoryTYPE(calloc)
            self._callbacks.freeMemory = fmi2CallbackFreeMemoryTYPE(free)
            addLoggerProxy(ctypes.byref(self._callbacks))  # formats the C varargs
            self._call("instantiate", self._slave.instantiate, False, self._callbacks)
        # The fast paths (set, get, step) call the C functions themselves, skipping fmpy's
        # Python wrapper, and check the returned status here. They keep the GIL: an FMI
        # call of these FMUs takes about a microsecond, and a call that let the GIL go
        # waited to get it back behind the host's history writer thread (measured: 47 us
        # per setReal instead of 0.8).
        self._set_real_fn, self._get_real_fn, self._do_step_fn = fmu.fast_functions(self._slave)
        # fmi3DoStep's out arguments, made once.
        self._step_flags = [ctypes.c_bool() for _ in range(3)]
        self._last_successful = ctypes.c_double()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def initialize(self, start_time: float, values: Mapping[str, Any] = {}) -> None:
        """Set ``values`` (parameters, inputs' start values), then run the FMU's
        initialization at ``start_time``."""
        self.time = float(start_time)
        self.set(values)
        if self._fmi3:
            self._call(
                "fmi3EnterInitializationMode", self._slave.enterInitializationMode, None, self.time
            )
        else:
            self._call("fmi2SetupExperiment", self._slave.setupExperiment, None, self.time)
            self._call("fmi2EnterInitializationMode", self._slave.enterInitializationMode)
        self._call("ExitInitializationMode", self._slave.exitInitializationMode)
        self.initialized = True

    def close(self) -> None:
        """Terminate and free the instance; never raises (a broken FMU is being dropped)."""
        if self._closed:
            return
        self._closed = True
        # Terminating or freeing a failed FMU may fail too; it is dropped either way.
        if self.initialized:
            with contextlib.suppress(Exception):
                self._slave.terminate()
        with contextlib.suppress(Exception):
            # Not fmpy's freeInstance: that would unload the library the others share.
            if self._fmi3:
                self._slave.fmi3FreeInstance(self._slave.component)
            else:
                self._slave.fmi2FreeInstance(self._slave.component)

    # -- values ----------------------------------------------------------------------

    def variable(self, name: str) -> Variable:
        try:
            return self.fmu.description.variables[name]
        except KeyError:
            raise FmuError(f"{self._where('set')}: the FMU has no variable {name!r}") from None

    def set(self, values: Mapping[str, Any]) -> None:
        """Set variables by name, of any type (reals, integers, booleans)."""
        for name, value in values.items():
            v = self.variable(name)
            if v.is_real:
                setter = self._slave.setFloat64 if self._fmi3 else self._slave.setReal
                self._call(f"set {name}", setter, [v.value_reference], [float(value)])
            elif v.type == "Boolean":
                self._call(
                    f"set {name}", self._slave.setBoolean, [v.value_reference], [bool(value)]
                )
            elif v.type == "String":
                self._call(f"set {name}", self._slave.setString, [v.value_reference], [str(value)])
            else:
                setter = self._slave.setInt32 if self._fmi3 else self._slave.setInteger
                self._call(f"set {name}", setter, [v.value_reference], [int(value)])

    def real_setter(self, names: Sequence[str]) -> Callable[[Sequence[float]], None]:
        """A setter for the real variables ``names``, in that order: the value-reference
        array is built once, so a call costs one FMI call."""
        refs, n = self._refs(names)
        values = (ctypes.c_double * n)()
        fn, component, check = self._set_real_fn, self._slave.component, self._check_status
        if self._fmi3:

            def set_values(new: Sequence[float]) -> None:
                values[:] = new
                check("fmi3SetFloat64", fn(component, refs, n, values, n))
        else:

            def set_values(new: Sequence[float]) -> None:
                values[:] = new
                check("fmi2SetReal", fn(component, refs, n, values))

        return set_values

    def real_getter(self, names: Sequence[str]) -> Callable[[], list[float]]:
        """A getter for the real variables ``names``; raises :class:`FmuError` if any
        value is not finite."""
        refs, n = self._refs(names)
        values = (ctypes.c_double * n)()
        fn, component, check = self._get_real_fn, self._slave.component, self._check_status
        label = "fmi3GetFloat64" if self._fmi3 else "fmi2GetReal"
        if self._fmi3:

            def call() -> Any:
                return fn(component, refs, n, values, n)
        else:

            def call() -> Any:
                return fn(component, refs, n, values)

        def get_values() -> list[float]:
            check(label, call())
            out = values[:]
            for name, value in zip(names, out, strict=True):
                if not math.isfinite(value):
                    raise FmuError(f"{self._where(label)}: output {name!r} is {value}")
            return out

        return get_values

    def get(self, names: Sequence[str]) -> dict[str, float]:
        return dict(zip(names, self.real_getter(names)(), strict=True))

    # -- stepping --------------------------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the FMU by ``dt`` seconds from ``time``."""
        component = self._slave.component
        try:
            if self._fmi3:
                flags = self._step_flags
                status = self._do_step_fn(
                    component,
                    self.time,
                    dt,
                    True,
                    *(ctypes.byref(flag) for flag in flags),
                    ctypes.byref(self._last_successful),
                )
            else:
                status = self._do_step_fn(component, self.time, dt, 1)
        except Exception as error:
            raise self._failure("doStep", _reason(error)) from error
        self._check_status("doStep", status)
        if self._fmi3 and self._step_flags[1].value:
            raise FmuError(f"{self._where('doStep')}: the FMU asked to terminate the simulation")
        self.time += dt

    # -- state -----------------------------------------------------------------------

    @property
    def can_save_state(self) -> bool:
        return self.fmu.description.can_serialize_state

    def save_state(self) -> bytes:
        """The FMU's serialized state (the FMU must be able to serialize it)."""
        state = self._call("getFMUState", self._slave.getFMUState)
        try:
            return self._call("serializeFMUState", self._slave.serializeFMUState, state)
        finally:
            self._call("freeFMUState", self._slave.freeFMUState, state)

    def load_state(self, data: bytes, time: float) -> None:
        state = self._call("deserializeFMUState", self._slave.deserializeFMUState, data)
        try:
            self._call("setFMUState", self._slave.setFMUState, state)
        finally:
            self._call("freeFMUState", self._slave.freeFMUState, state)
        self.time = float(time)

    # -- helpers ---------------------------------------------------------------------

    def _refs(self, names: Sequence[str]) -> tuple[Any, int]:
        for name in names:
            if not self.variable(name).is_real:
                raise FmuError(f"{self._where('set')}: {name!r} is not a real variable")
        n = len(names)
        refs = (ctypes.c_uint32 * n)(*(self.variable(nm).value_reference for nm in names))
        return refs, n

    def _check_status(self, function: str, status: int) -> None:
        if status > 1:  # OK 0, Warning 1; Discard, Error, Fatal
            raise self._failure(function, f"returned {_status_label(status)}")

    def _call(self, function: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except FmuError:
            raise
        except Exception as error:
            raise self._failure(function, _reason(error)) from error

    def _failure(self, function: str, reason: str) -> FmuError:
        said = "; ".join(self._messages)
        self._messages.clear()
        return FmuError(f"{self._where(function)}: {reason}" + (f" ({said})" if said else ""))

    def _on_log2(self, _env: Any, _name: Any, status: int, _category: Any, message: bytes) -> None:
        if status > 1:
            self._messages.append(message.decode("utf-8", "replace"))

    def _on_log3(self, _env: Any, status: int, _category: Any, message: bytes) -> None:
        if status > 1:
            self._messages.append(message.decode("utf-8", "replace"))

    def _where(self, function: str) -> str:
        return f"fmu {self.fmu.name}, instance {self.name}, {function} at t={self.time:g}"


def _holding_gil(released: ctypes.CDLL, held: ctypes.PyDLL, name: str) -> Any:
    """``name`` of ``held``, with the argument types fmpy gave it in ``released``."""
    template = getattr(released, name)
    function = getattr(held, name)
    function.argtypes, function.restype = template.argtypes, template.restype
    return function


def _status_label(status: int) -> str:
    return {2: "Discard", 3: "Error", 4: "Fatal"}.get(status, f"status {status}")


def _reason(error: Exception) -> str:
    if isinstance(error, FMICallException):
        return f"returned {_status_label(error.status)}"
    return str(error) or type(error).__name__
