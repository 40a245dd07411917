"""Test certificates: the generator lives with the benchmarks (``bench/ingest.py --tls``
makes the same ones), which are scripts, not a package. Loaded from its file rather than
by putting ``bench/`` on the path, where ``bench/graphql.py`` would shadow graphql-core."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "tls_certificates"
_spec = importlib.util.spec_from_file_location(
    _NAME, Path(__file__).resolve().parents[2] / "bench" / f"{_NAME}.py"
)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[_NAME] = _module  # dataclasses look their module up while being made
_spec.loader.exec_module(_module)

KeyPair = _module.KeyPair
TlsFiles = _module.TlsFiles
make_certificates = _module.make_certificates

__all__ = ["KeyPair", "TlsFiles", "make_certificates"]
