"""The twin service: DTDL models, twins, relationships, queries and bulk import on a graph
store, behaving as users of Azure Digital Twins expect (ETags, JSON Patch, $metadata)."""

from .errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    Problem,
    QueryRejected,
    TwinServiceError,
    ValidationFailed,
)
from .import_job import ImportReport, LineError, import_ndjson
from .models import ModelCatalog, StoredModel
from .queries import Op, Predicate, Traversal, TwinQuery, check_read_only, compile_query
from .service import Page, TwinService

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
