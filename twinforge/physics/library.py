"""The FMUs a server binds to interfaces: those of its physics configuration, and the
versions uploaded since, kept under ``data_dir/physics`` so that a restart keeps them.

Every binding is checked against its FMU and its interface before it is bound: a bad
upload is refused with every problem named, and the running version stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from twinforge.physics.build import ensure_binary
from twinforge.physics.checks import PhysicsPlan, check_binding
from twinforge.physics.config import PhysicsBinding, load_physics_config
from twinforge.physics.errors import FmuError, PhysicsConfigError
from twinforge.twin_models import Interface

#: The largest FMU an upload may carry (ours are about 30 KB; tool exports a few MB).
MAX_FMU_BYTES = 64 * 1024 * 1024


class PhysicsLibrary:
    """Bindings by interface, checked; ``interface_of`` looks a DTMI up in the models."""

    def __init__(
        self,
        data_dir: Path,
        bindings: Sequence[PhysicsBinding],
        interface_of: Callable[[str], Interface],
    ) -> None:
        self.dir = data_dir / "physics"
        self._interface_of = interface_of
        self._lock = threading.Lock()
        self._uploads_path = self.dir / "uploads.json"
        self.bindings = {b.interface: b for b in bindings}
        if self._uploads_path.exists():
            uploaded = load_physics_config(self._uploads_path)
            self.bindings |= {b.interface: b for b in uploaded}
        self.plans = {i: self._check(b) for i, b in self.bindings.items()}

    def all_plans(self) -> tuple[PhysicsPlan, ...]:
        return tuple(self.plans.values())

    def upload(
        self, interface: str, fmu: bytes, binding: PhysicsBinding | None = None
    ) -> PhysicsPlan:
        """Bind a new FMU version to ``interface``, with ``binding``'s mappings (default:
        the interface's current binding); raises :class:`PhysicsConfigError` naming
        what does not fit, and binds nothing then."""
        if len(fmu) > MAX_FMU_BYTES:
            raise PhysicsConfigError(
                [f"fmu: {len(fmu):,} bytes is more than the {MAX_FMU_BYTES:,} an upload may be"]
            )
        with self._lock:
            base = binding or self.bindings.get(interface)
            if base is None:
                raise PhysicsConfigError(
                    [
                        f"binding: {interface} has no physics binding yet; upload the FMU "
                        "with one (inputs, parameters, expected)"
                    ]
                )
            if base.interface != interface:
                raise PhysicsConfigError(
                    [f"binding.interface: {base.interface} is not the interface {interface}"]
                )
            path = self._store(fmu)
            new = base.model_copy(update={"fmu": path})
            plan = self._check(new)
            self.bindings[interface], self.plans[interface] = new, plan
            self._save_uploads(interface)
            return plan

    def _check(self, binding: PhysicsBinding) -> PhysicsPlan:
        try:
            interface = self._interface_of(binding.interface)
        except Exception as error:  # the model service's not-found error
            raise PhysicsConfigError([f"interface: {binding.interface}: {error}"]) from None
        try:
            # A source-only FMU is built here, once, not in every host.
            binary = ensure_binary(binding.fmu)
        except FmuError as error:
            raise PhysicsConfigError([str(error)]) from None  # it names the fmu
        return check_binding(binding.model_copy(update={"fmu": binary}), interface)

    def _store(self, fmu: bytes) -> Path:
        target = self.dir / "fmus" / f"{hashlib.sha256(fmu).hexdigest()[:20]}.fmu"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(fmu)
            os.replace(partial, target)
        return target

    def _save_uploads(self, interface: str) -> None:
        uploaded = json.loads(self._uploads_path.read_text()) if self._uploads_path.exists() else []
        uploaded = [b for b in uploaded if b["interface"] != interface]
        uploaded.append(self.bindings[interface].model_dump(mode="json"))
        partial = self._uploads_path.with_suffix(".partial")
        partial.write_text(json.dumps(uploaded, indent=1))
        os.replace(partial, self._uploads_path)
