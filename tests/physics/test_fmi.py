"""Running FMUs through FmuInstance: FMI 3.0, and every hostile FMU refused or failing
with an FmuError that says what went wrong; a crashing FMU kills only its own process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import fmpy
import pytest

from twinforge.physics.errors import FmuError
from twinforge.physics.fmi import FmuInstance, LoadedFmu


def faulty(loaded: dict[str, LoadedFmu], mode: int, version: str = "") -> FmuInstance:
    instance = loaded[f"faulty{version}"].instantiate(f"mode{mode}")
    instance.initialize(0.0, {"failAt": 5.0, "failMode": float(mode)})
    return instance


def run_until_failure(instance: FmuInstance) -> None:
    try:
        for _ in range(10):
            instance.step(1.0)
    finally:
        instance.close()


def test_an_fmi3_fmu_runs_through_fmu_instance(loaded: dict[str, LoadedFmu]) -> None:
    assert loaded["faulty3"].description.fmi_version == "3.0"
    instance = loaded["faulty3"].instantiate("three")
    try:
        instance.initialize(0.0, {"u": 2.0})
        set_u, read = instance.real_setter(["u"]), instance.real_getter(["y", "time"])
        for _ in range(3):
            instance.step(1.0)
        set_u([0.5])
        instance.step(2.0)
        assert read() == [7.0, 5.0]
    finally:
        instance.close()


@pytest.mark.parametrize("version", ["", "3"])
@pytest.mark.parametrize(("mode", "label"), [(1, "Error"), (2, "Fatal")])
def test_a_failing_step_names_the_call_the_time_and_the_status(
    loaded: dict[str, LoadedFmu], mode: int, label: str, version: str
) -> None:
    instance = faulty(loaded, mode, version)
    with pytest.raises(
        FmuError,
        match=rf"instance mode{mode}, doStep at t=4: returned {label} "
        rf"\(doStep at t=4: failing .*as asked \(failMode {mode}\)\)",
    ):
        run_until_failure(instance)
    assert instance.time == 4.0


def test_a_nan_output_names_the_output(loaded: dict[str, LoadedFmu]) -> None:
    instance = faulty(loaded, 3)
    read = instance.real_getter(["y"])
    try:
        for _ in range(4):
            instance.step(1.0)
        assert read() == [4.0]
        instance.step(1.0)
        with pytest.raises(FmuError, match=r"fmi2GetReal at t=5: output 'y' is nan"):
            read()
    finally:
        instance.close()


def test_a_crashing_fmu_kills_only_its_own_process(
    test_fmus: dict[str, Path], tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from twinforge.physics.fmi import LoadedFmu\n"
        "work = Path(sys.argv[2]) / 'not' / 'made' / 'yet'\n"
        "instance = LoadedFmu(Path(sys.argv[1]), work_dir=work).instantiate('c')\n"
        "instance.initialize(0.0, {'failAt': 2.0, 'failMode': 4.0})\n"
        "for _ in range(5):\n"
        "    instance.step(1.0)\n"
        "print('survived')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(test_fmus["faulty"]), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGSEGV, done.stderr
    assert "survived" not in done.stdout


def test_an_fmu_without_binary_or_sources_names_the_platform(test_fmus: dict[str, Path]) -> None:
    with pytest.raises(
        FmuError,
        match=rf"has no binary for {fmpy.platform} \(it has: none\) "
        "and no C sources",
    ):
        LoadedFmu(test_fmus["description_only"])


def test_an_fmi1_fmu_names_its_version(test_fmus: dict[str, Path]) -> None:
    with pytest.raises(FmuError, match=r"fmi1.fmu is FMI 1.0; twinforge runs FMI 2.0 and 3.0"):
        LoadedFmu(test_fmus["fmi1"])


def test_a_model_exchange_only_fmu_is_refused(test_fmus: dict[str, Path]) -> None:
    with pytest.raises(FmuError, match=r"no Co-Simulation interface \(Model Exchange only\)"):
        LoadedFmu(test_fmus["model_exchange"])


def test_a_file_that_is_no_fmu_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fmu"
    junk.write_bytes(b"not a zip")
    with pytest.raises(FmuError, match=r"junk\.fmu is not a readable FMU"):
        LoadedFmu(junk)
