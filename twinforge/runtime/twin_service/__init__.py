"""The twin service: DTDL models, twins, relationships, queries and bulk import on a graph
store, behaving as users of Azure Digital Twins expect (ETags, JSON Patch, $metadata)."""

from twinforge.runtime.twin_service.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    Problem,
    QueryRejected,
    TwinServiceError,
    ValidationFailed,
)
from twinforge.runtime.twin_service.import_job import ImportReport, LineError, import_ndjson
from twinforge.runtime.twin_service.models import ModelCatalog, StoredModel
from twinforge.runtime.twin_service.queries import (
    Op,
    Predicate,
    Traversal,
    TwinQuery,
    check_read_only,
    compile_query,
)
from twinforge.runtime.twin_service.service import Page, TwinService

__all__ = [
    "AlreadyExists",
    "Conflict",
    "ImportReport",
    "LineError",
    "ModelCatalog",
    "NotFound",
    "Op",
    "Page",
    "PreconditionFailed",
    "Predicate",
    "Problem",
    "QueryRejected",
    "StoredModel",
    "Traversal",
    "TwinQuery",
    "TwinService",
    "TwinServiceError",
    "ValidationFailed",
    "check_read_only",
    "compile_query",
    "import_ndjson",
]
