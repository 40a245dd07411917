"""Build hook: compile the DTDL parser's hot modules with mypyc (about 1.5x faster parsing).

The modules listed under ``[tool.hatch.build.targets.wheel.hooks.custom] include`` are
compiled in place (``*.so`` next to each ``.py``, plus one shared runtime library), for
wheels and for editable installs alike; the compiled module wins over its ``.py`` on import.
If compiling fails (no C compiler, no Python headers, a mypyc error) the build goes on with
the pure-Python modules and a warning. Set TWINFORGE_NO_MYPYC=1 to skip compiling.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

GROUP = (
    "twinforge.twin_models._mypyc"  # the shared library: twinforge/twin_models/_mypyc__mypyc.*.so
)


class MypycBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        files: list[str] = list(self.config.get("include", []))
        self._clean(files)  # never leave a stale compiled module shadowing its .py
        if not files or os.environ.get("TWINFORGE_NO_MYPYC"):
            return
        try:
            self._compile(files, dict(self.config.get("options", {})))
        except BaseException as exc:  # SystemExit from distutils on a compiler error, too
            self._clean(files)
            print(f"twinforge: mypyc build failed, using pure Python: {exc!r}", file=sys.stderr)
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].extend(f"/{_stem(f)}.*.so" for f in files)
        build_data["artifacts"].append(f"/{GROUP.replace('.', '/')}__mypyc.*.so")

    def _compile(self, files: list[str], options: dict[str, Any]) -> None:
        from mypyc.build import mypycify
        from setuptools import Distribution

        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(self.root):
            extensions = mypycify(
                ["--cache-dir", os.devnull, *files],
                group_name=GROUP,
                target_dir=os.path.join(tmp, "c"),
                **options,
            )
            dist = Distribution({"name": "twinforge-mypyc", "ext_modules": extensions})
            build_ext = dist.get_command_obj("build_ext")
            build_ext.inplace = True
            build_ext.build_temp = os.path.join(tmp, "temp")
            build_ext.build_lib = os.path.join(tmp, "lib")
            dist.run_command("build_ext")

    def _clean(self, files: list[str]) -> None:
        patterns = [f"{_stem(f)}.*.so" for f in files]
        patterns.append(f"{GROUP.replace('.', '/')}__mypyc.*.so")
        for pattern in patterns:
            for path in glob.glob(os.path.join(self.root, pattern)):
                os.remove(path)


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]
