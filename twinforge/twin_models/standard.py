"""Elements every DTDL model may refer to without defining them.

The primitive schemas and command types come from the metamodel's ``ModelElements``
files; the geospatial schemas and ``scaledDecimal`` are defined by the specifications'
text, and the units of the quantitative-types extension by its ``Elements`` file.
"""

from __future__ import annotations

import re
from functools import cache

from twinforge.twin_models.dtmi import local_name
from twinforge.twin_models.metamodel import DTDL_VERSIONS, language

DURATION = re.compile(
    r"^P(?!$)(?:(?:(?:(?:\d+Y)|(?:\d+\.\d+Y$))?(?:(?:\d+M)|(?:\d+\.\d+M$))?)|(?:(?:(?:\d+W)|(?:\d+\.\d+W$))?))"
    r"(?:(?:\d+D)|(?:\d+\.\d+D$))?(?:T(?!$)(?:(?:\d+H)|(?:\d+\.\d+H$))?(?:(?:\d+M)|(?:\d+\.\d+M$))?"
    r"(?:\d+(?:\.\d+)?S)?)?$"
)


@cache
def _standard_classes() -> dict[str, str]:
    """Standard element DTMI -> the term of its class."""
    known: dict[str, str] = {}
    for version in DTDL_VERSIONS:
        lang = language(version)
        known.update(lang.instances)
        for iri in lang.terms.values():
            if iri.startswith("dtmi:standard:schema:"):
                known[iri] = "Object"
            elif iri.startswith("dtmi:standard:unit:") or iri.startswith(
                "dtmi:standard:unitprefix:"
            ):
                known[iri] = "Unit"
            elif iri.startswith("dtmi:iotcentral:schema:"):
                known[iri] = "Object"
        for ext in lang.extensions.values():
            for enum_term, values in ext.enum_values.items():
                known[ext.terms.get(enum_term, enum_term)] = "Enum"
                for value_iri in values:
                    known[value_iri] = "EnumValue"
    return known


def is_standard(iri: str) -> bool:
    return iri in _standard_classes()


def standard_class(iri: str) -> str | None:
    """The class term of a standard element (``Double`` for ``dtmi:dtdl:instance:Schema:double;3``)."""
    return _standard_classes().get(iri)


def primitive_name(iri: str) -> str | None:
    """``double`` for ``dtmi:dtdl:instance:Schema:double;4``; None for non-primitives."""
    if iri.startswith(("dtmi:dtdl:instance:Schema:", "dtmi:standard:schema:")):
        return local_name(iri)
    return None


def contains_array(iri: str) -> bool:
    """True for standard schemas built from arrays (the GeoJSON coordinate lists)."""
    return iri.startswith("dtmi:standard:schema:geospatial:")
