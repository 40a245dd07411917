"""Benchmark: FMU physics in the asset hosts.

Figures, each beside its baseline from the same run:

* ``step_cost_ratio``: the cost one FMU step adds to an asset host's ingest (a host with
  the sample factory's pump binding against the same host without physics, per sample)
  over a bare fmpy loop of the same FMI calls (setReal of the inputs, doStep, getReal of
  the outputs). Goal: at most 1.5.
* ``physics_cpu_overhead``: CPU the asset hosts on Ray spend with physics on every bound
  asset of the sample plant at 1 Hz, over the same hosts and load without physics,
  minus one (both fleets running at once, each tick to both in turn). Goal: at most 0.10.
* ``what_if_hour_s``: a one-hour what-if at a 1 s step from a live twin's state, through
  the fleet (a Ray task), median wall time. Goal: under 1 s.
* ``fmu_kb_per_instance``: RSS a host gains per FMU instance (500 pumps). Goal: 50 KB.
* ``residual_lead_min`` and ``healthy_residual_alarms``: a pump's bearing wear growing over
  hours in the simulated plant, watched by its twin: minutes between the residual alarm
  and the plain threshold alarm; and residual alarms raised over a simulated day of the
  healthy plant (a seed of its own: the residual limits were chosen on another). Goals:
  at least 10 minutes earlier, none on the healthy plant.

    uv run python bench/physics.py [--quick]

The last line is JSON with those six keys.
"""

from __future__ import annotations

import argparse
import gc
import json
import os

# Before Ray is imported: under `uv run` Ray would package this checkout for every worker.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
import statistics
import tempfile
import time
from pathlib import Path

import fmpy
from fmpy.fmi2 import FMU2Slave

from twinforge.actors.alarms import load_alarm_rules
from twinforge.actors.asset_host import AssetHost, HostConfig
from twinforge.physics.asset_physics import AssetPhysics
from twinforge.physics.checks import PhysicsPlan, check_binding
from twinforge.physics.fmi import LoadedFmu
from twinforge.physics.model_description import read_description
from twinforge.physics.what_if import WhatIf
from twinforge.sim.factory import ALARM_RULES, sample_physics
from twinforge.sim.layout import CNC, MOLDING, PUMP, load_factory_models, sample_plant
from twinforge.sim.machines import PlantPhysics, ScheduledFault
from twinforge.twin_models import parse_models

PHYSICS_MODELS = (PUMP, MOLDING, CNC)


def plans() -> dict[str, PhysicsPlan]:
    models = parse_models(load_factory_models())
    return {b.interface: check_binding(b, models.interface(b.interface)) for b in sample_physics()}


def rss_kb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


# -- step cost ----------------------------------------------------------------------


def bare_step_us(plan: PhysicsPlan, steps: int) -> float:
    """fmpy alone: the same FMI calls an asset's step makes, through FMU2Slave."""
    description = read_description(plan.fmu)
    unzipped = fmpy.extract(str(plan.fmu))
    slave = FMU2Slave(
        guid=description.guid,
        unzipDirectory=unzipped,
        modelIdentifier=description.model_identifier,
        instanceName="bare",
    )
    slave.instantiate()
    slave.setupExperiment(startTime=0.0)
    slave.enterInitializationMode()
    slave.exitInitializationMode()
    ins = [description.variables[f.variable].value_reference for f in plan.inputs]
    outs = [description.variables[e.variable].value_reference for e in plan.expected]
    values = [2900.0, 1.0][: len(ins)]
    t = 0.0
    start = time.thread_time()
    for _ in range(steps):
        slave.setReal(ins, values)
        slave.doStep(t, 1.0)
        slave.getReal(outs)
        t += 1.0
    elapsed = time.thread_time() - start
    slave.terminate()
    slave.freeInstance()
    return elapsed / steps * 1e6


def pump_batches(twins: list[str], ticks: int, t0: float = 1_000_000.0) -> list[list[tuple]]:
    values = {"speed": 2900.0, "valvePosition": 0.9, "flowRate": 36.0, "pressure": 4.3}
    return [[(t, "telemetry", dict(values), t0 + k, t0 + k) for t in twins] for k in range(ticks)]


def host_cost_us(
    data_dir: Path,
    plans: tuple[PhysicsPlan, ...],
    models: dict[str, str],
    batches: list[list[tuple]],
    lineage: dict[str, tuple[str, ...]] | None = None,
) -> tuple[float, float]:
    """Microseconds per sample of a host's ingest (plain class, no Ray); and of that,
    this thread's CPU time inside the host's physics (``HostPhysics.derive``: set the
    inputs, doStep, get the outputs, the residuals; the timer adds about 0.3 us). Each
    the median over batches: a garbage collection that one batch's allocations set off
    (the whole host's heap) would otherwise count as that batch's stepping."""
    config = HostConfig(data_dir, physics=plans, lineage=lineage or {}, synchronous="NORMAL")
    host = AssetHost(0, config, models)
    host.ingest(batches[0])  # instances start here: not a step
    spent = [0.0]
    if host.physics is not None:
        derive = host.physics.derive

        # Thread CPU time: the host's history writer thread runs meanwhile, and wall
        # time would count its turns on the GIL as stepping.
        def timed(*args):
            start = time.thread_time()
            derived = derive(*args)
            spent[0] += time.thread_time() - start
            return derived

        host.physics.derive = timed  # type: ignore[method-assign]
    times, stepping = [], []
    for batch in batches[1:]:
        start, before = time.perf_counter(), spent[0]
        host.ingest(batch)
        times.append((time.perf_counter() - start) / len(batch))
        stepping.append((spent[0] - before) / len(batch))
    host.close()
    return statistics.median(times) * 1e6, statistics.median(stepping) * 1e6


def step_cost(root: Path, plan: PhysicsPlan, quick: bool) -> dict[str, float]:
    twins = [f"pump-{i:04d}" for i in range(500)]
    ticks = 20 if quick else 60
    bare, without, with_physics, inside = [], [], [], []
    for run in range(3):  # alternated, so drift hits both sides alike
        bare.append(bare_step_us(plan, 20_000))
        batches = pump_batches(twins, ticks)
        models = dict.fromkeys(twins, PUMP)
        without.append(host_cost_us(root / f"off-{run}", (), models, batches)[0])
        total, stepping = host_cost_us(root / f"on-{run}", (plan,), models, batches)
        with_physics.append(total)
        inside.append(stepping)
    bare_us, off_us, on_us, step_us = (
        statistics.median(x) for x in (bare, without, with_physics, inside)
    )
    added = on_us - off_us
    print(
        f"step cost: bare fmpy loop (setReal, doStep, getReal) {bare_us:.1f} us/step; "
        f"the same step inside a host (HostPhysics.derive) {step_us:.1f} us "
        f"= {step_us / bare_us:.2f}x the bare loop"
    )
    print(
        f"ingest: {off_us:.1f} us/sample without physics, {on_us:.1f} with: physics adds "
        f"{added:.1f} us per sample ({step_us:.1f} stepping, the rest recording its "
        f"{len(plan.expected)} expected values and their residuals as live values and history)"
    )
    return {
        "step_cost_ratio": round(step_us / bare_us, 2),
        "bare_step_us": round(bare_us, 2),
        "ingest_added_us": round(added, 1),
        "ingest_us_without_physics": round(off_us, 1),
    }


def bare_instance(plan: PhysicsPlan, unzipped: str, name: str) -> FMU2Slave:
    description = read_description(plan.fmu)
    slave = FMU2Slave(
        guid=description.guid,
        unzipDirectory=unzipped,
        modelIdentifier=description.model_identifier,
        instanceName=name,
    )
    slave.instantiate()
    slave.setupExperiment(startTime=0.0)
    slave.enterInitializationMode()
    slave.exitInitializationMode()
    return slave


def rss_per_instance(kind: str, root: Path, count: int) -> float:
    """KB of RSS per instance of ``count`` running pump FMUs: ``ours`` (a host's
    AssetPhysics: the FMU instance, its inputs and setters) or ``bare`` (fmpy's
    FMU2Slave). Run in a fresh process: memory an earlier figure freed would be reused
    without showing in RSS."""
    plan = plans()[PUMP]
    fmu = LoadedFmu(plan.fmu, work_dir=root / "memory")
    values = {"speed": 2900.0, "valvePosition": 0.9, "flowRate": 36.0}

    def make(name: str) -> object:
        if kind == "bare":
            return bare_instance(plan, str(fmu.unzip_dir), name)
        asset = AssetPhysics(plan, fmu, name)
        asset.update(values, 1.0)
        asset.update(values, 2.0)
        assert asset.running
        return asset

    kept = [make("warm")]  # the shared library and fmpy loaded once
    gc.collect()
    before = rss_kb()
    kept += [make(f"pump-{i:04d}") for i in range(count)]
    gc.collect()
    return (rss_kb() - before) / count


def rss_per_twin(with_physics: bool, root: Path, count: int) -> float:
    """KB of RSS a host holds per pump twin once its ring buffers are full, with or
    without physics (which adds the FMU and a series per expected value and residual)."""
    plan = plans()[PUMP]
    twins = [f"pump-{i:04d}" for i in range(count)]
    config = HostConfig(
        root / f"twins-{with_physics}",
        physics=(plan,) if with_physics else (),
        synchronous="NORMAL",
    )
    gc.collect()
    before = rss_kb()
    host = AssetHost(0, config, dict.fromkeys(twins, PUMP))
    for batch in pump_batches(twins, config.capacity + 8):
        host.ingest(batch)
    host.checkpoint()
    gc.collect()
    return (rss_kb() - before) / count


def memory_per_instance(root: Path, count: int = 1000) -> dict[str, float]:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    figures = {}
    for kind in ("bare", "ours"):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            figures[kind] = pool.submit(rss_per_instance, kind, root, count).result()
    for with_physics in (False, True):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            figures[with_physics] = pool.submit(rss_per_twin, with_physics, root, 300).result()
    print(
        f"memory: {figures['ours']:.1f} KB RSS per running FMU in a host, "
        f"{figures['bare']:.1f} KB per bare fmpy FMU2Slave instance ({count} of each, "
        "each set in a fresh process)"
    )
    print(
        f"  a pump twin in a host, ring buffers full: {figures[False]:.0f} KB without "
        f"physics, {figures[True]:.0f} KB with (its FMU, and a series of "
        f"{HostConfig(root).capacity} samples per expected value and residual)"
    )
    return {
        "twin_kb_with_physics": round(figures[True]),
        "twin_kb_without_physics": round(figures[False]),
        "fmu_kb_per_instance": round(figures["ours"], 1),
        "bare_fmu_kb_per_instance": round(figures["bare"], 1),
    }


# -- residual alarms on the simulated plant ------------------------------------------


def watch(
    data_dir: Path,
    physics: PlantPhysics,
    twins: list[str],
    seconds: int,
    stop_on: str | None = None,
) -> dict[str, list[tuple[float, str]]]:
    """Run the plant for ``seconds`` (1 s steps), its twins in a host with the sample
    factory's physics and alarm rules; the alarms raised, per rule: (time, twin)."""
    rules = tuple(load_alarm_rules(ALARM_RULES))
    models = parse_models(load_factory_models())
    lineage = {
        m: tuple([m, *[e.id for e in _ancestors(models.interface(m))]]) for m in PHYSICS_MODELS
    }
    config = HostConfig(
        data_dir,
        physics=tuple(plans().values()),
        alarm_rules=rules,
        lineage=lineage,
        synchronous="NORMAL",
        history_interval_s=60.0,
    )
    host = AssetHost(0, config, {t: physics.layout.twin(t).model for t in twins})
    raised: dict[str, list[tuple[float, str]]] = {}
    t0 = 1_700_000_000.0
    batch: list[tuple] = []
    for second in range(1, seconds + 1):
        values = physics.step(1.0)
        now = t0 + second
        batch.extend((t, "telemetry", values[t], now, now) for t in twins)
        if len(batch) >= 600 or second == seconds:
            result = host.ingest(batch)
            batch = []
            for change in result.alarms:
                if change.raised:
                    raised.setdefault(change.name, []).append((change.time - t0, change.twin_id))
            for off in result.physics_off:
                print(f"  physics off for {off.twin_id}: {off.reason}")
            if stop_on and stop_on in raised:
                break
    host.close()
    return raised


def _ancestors(interface):
    for parent in interface.extends:
        yield parent
        yield from _ancestors(parent)


def residual_alarms(root: Path, quick: bool) -> dict[str, float]:
    layout = sample_plant(24, seed=3)
    twins = [t.id for t in layout.equipment() if t.model in PHYSICS_MODELS]
    day = 3 * 3600 if quick else 86_400
    healthy = watch(root / "healthy", PlantPhysics(layout, seed=101), twins, day)
    residual_rules = {r.name for r in load_alarm_rules(ALARM_RULES) if ".residual" in r.field}
    false_alarms = sum(len(v) for k, v in healthy.items() if k in residual_rules)
    print(
        f"healthy plant, {day / 3600:.0f} simulated h, {len(twins)} twins with physics: "
        f"{false_alarms} residual alarms; threshold alarms {sum(map(len, healthy.values())) - false_alarms}"
    )
    pump = next(t.id for t in layout.equipment() if t.model == PUMP)
    wear = ScheduledFault(600.0, pump, "bearing_wear", ramp_s=6 * 3600.0)
    worn = watch(
        root / "worn",
        PlantPhysics(layout, seed=102, schedule=[wear]),
        [pump],
        12 * 3600,
        stop_on="bearingWear",
    )
    first = {name: min(t for t, twin in hits if twin == pump) for name, hits in worn.items()}
    threshold = first.get("bearingWear")
    residual = min((first[n] for n in residual_rules if n in first), default=None)
    print(f"bearing wear on {pump} from t=600 s, full after 6 h: first alarms {first}")
    lead = float("nan") if threshold is None or residual is None else (threshold - residual) / 60
    print(
        f"residual alarm {lead:.1f} min before the threshold alarm (residual at "
        f"{(residual or 0) / 60:.1f} min, threshold at {(threshold or 0) / 60:.1f} min)"
    )
    return {"residual_lead_min": round(lead, 1), "healthy_residual_alarms": false_alarms}


# -- on Ray: CPU overhead and the what-if task ----------------------------------------


def host_cpu_s(fleet) -> float:
    total = 0.0
    for stat in fleet.stats():
        with open(f"/proc/{stat['pid']}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def send(fleet, tick: dict[str, dict[str, float]], k: int) -> None:
    """One plant tick to the hosts, at source time ``k`` s; returns once all applied.
    Derived values are not asked back: the server asks only while someone subscribes to
    telemetry, and the ingest bench has no subscriber."""
    t = 1_700_000_000.0 + k
    by_host: dict[int, list] = {}
    for twin, values in tick.items():
        by_host.setdefault(fleet.route(twin), []).append((twin, "telemetry", values, t, t))
    for future in [fleet.send(h, e, derived=False) for h, e in by_host.items()]:
        future.result()


def on_ray(root: Path, quick: bool) -> dict[str, float]:
    import ray

    from twinforge.actors.fleet import AssetFleet

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        layout = sample_plant(1000, seed=5)
        equipment = layout.equipment()
        twins = {t.id: t.model for t in equipment}
        bound = sum(t.model in PHYSICS_MODELS for t in equipment)
        seconds = 20 if quick else 60
        physics = PlantPhysics(layout, seed=9)
        ticks = [physics.step(1.0) for _ in range(seconds + 1)]
        all_plans = tuple(plans().values())
        lineage = {m: (m,) for m in PHYSICS_MODELS}
        # Both fleets run at once and get each tick in turn (the order alternating), so
        # the machine's drift (2x between hours here) falls on both alike.
        fleets = {}
        for label in ("without", "with"):
            fleets[label] = AssetFleet(HostConfig(root / f"ray-{label}", lineage=lineage))
            fleets[label].add(twins)
        fleets["with"].set_physics(all_plans)
        for fleet in fleets.values():
            send(fleet, ticks[0], 0)  # instances start
        before = {label: host_cpu_s(fleet) for label, fleet in fleets.items()}
        start = time.monotonic()
        for k in range(1, seconds + 1):  # 1 Hz per asset, paced in real time
            for label in ("without", "with") if k % 2 else ("with", "without"):
                send(fleets[label], ticks[k], k)
            time.sleep(max(0.0, start + k - time.monotonic()))
        cpu = {label: host_cpu_s(fleet) - before[label] for label, fleet in fleets.items()}
        what_if = what_if_runs(fleets["with"], next(t for t, m in twins.items() if m == PUMP))
        for fleet in fleets.values():
            fleet.close()
        overhead = cpu["with"] / cpu["without"] - 1
        print(
            f"hosts on Ray, {len(twins)} assets ({bound} with physics) at 1 Hz for {seconds} s: "
            f"{cpu['without']:.1f} CPU s without physics, {cpu['with']:.1f} with "
            f"(+{overhead:.1%})"
        )
        # Where it goes: the same ticks into one host in this process, without Ray.
        batches = [
            [(t, "telemetry", v, 1_700_000_000.0 + k, 1_700_000_000.0 + k) for t, v in tick.items()]
            for k, tick in enumerate(ticks[: seconds + 1])
        ]
        off_us, _ = host_cost_us(root / "plant-off", (), twins, batches, lineage)
        on_us, step_us = host_cost_us(root / "plant-on", all_plans, twins, batches, lineage)
        stepping = step_us * len(twins) * seconds / 1e6
        print(
            f"  the same ticks in one host without Ray: {off_us:.1f} us/sample without physics, "
            f"{on_us:.1f} with; stepping the FMUs is {stepping:.2f} CPU s of the run "
            f"(+{stepping / cpu['without']:.1%} of the hosts' CPU on Ray), the rest is recording "
            "the expected values and residuals (ring buffers, live values, history)"
        )
        return {
            "physics_cpu_overhead": round(overhead, 3),
            "stepping_cpu_overhead": round(stepping / cpu["without"], 3),
            **what_if,
        }
    finally:
        ray.shutdown()


def what_if_runs(fleet, twin: str) -> dict[str, float]:
    request = WhatIf(
        3600.0,
        1.0,
        parameters={"bearingWear": 0.3},
        profiles={"speed": [(0.0, 2900.0), (1800.0, 2400.0)]},
    )
    fleet.simulate(twin, request)  # the first task starts a worker process
    walls = []
    for _ in range(5):
        start = time.perf_counter()
        result = fleet.simulate(twin, request)
        walls.append(time.perf_counter() - start)
    plan = plans()[PUMP]
    fmu = LoadedFmu(plan.fmu)
    from twinforge.physics.asset_physics import PhysicsState
    from twinforge.physics.what_if import simulate

    state = PhysicsState(0.0, {"speed": 2900.0, "valvePosition": 1.0}, None)
    start = time.perf_counter()
    simulate(plan, fmu, state, request)
    direct = time.perf_counter() - start
    fmu.close()
    wall = statistics.median(walls)
    print(
        f"what-if, 1 h at 1 s ({len(result.times)} steps): {wall:.3f} s median through the "
        f"fleet's Ray task, {direct:.3f} s in-process (from state: {result.from_state})"
    )
    return {"what_if_hour_s": round(wall, 3), "what_if_in_process_s": round(direct, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twinforge-bench-physics-"))
    plan = plans()[PUMP]
    figures: dict[str, float] = {}
    figures |= step_cost(root / "step", plan, args.quick)
    figures |= memory_per_instance(root)
    figures |= residual_alarms(root, args.quick)
    figures |= on_ray(root, args.quick)
    keys = (
        "step_cost_ratio",
        "physics_cpu_overhead",
        "what_if_hour_s",
        "residual_lead_min",
        "healthy_residual_alarms",
        "fmu_kb_per_instance",
    )
    print(json.dumps({k: figures[k] for k in keys}))


if __name__ == "__main__":
    main()
