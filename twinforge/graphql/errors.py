"""Stable error codes for GraphQL errors, and the extension that puts them on every error.

Clients branch on ``errors[].extensions.code``, never on messages, so each failure gets
one of the codes below. Errors nobody anticipated become ``INTERNAL_ERROR`` with the
message "internal error": the real one is logged, not sent, so internals don't leak.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pydantic
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.extensions import SchemaExtension

from twinforge.auth.errors import Forbidden, Unauthenticated
from twinforge.errors import ClientError
from twinforge.runtime.commands import ApprovalError, CommandNotFound, PolicyError
from twinforge.runtime.twin_service.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    PreconditionFailed,
    QueryRejected,
    TwinServiceError,
    ValidationFailed,
)
from twinforge.twin_models import ModelParsingError, ResolutionError

__all__ = [
    "BAD_USER_INPUT",
    "CONFLICT",
    "FORBIDDEN",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "INTERNAL_ERROR",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "PRECONDITION_FAILED",
    "QUERY_TOO_COMPLEX",
    "QUERY_TOO_DEEP",
    "RATE_LIMITED",
    "UNAUTHENTICATED",
    "ApiError",
    "BadInput",
    "ConflictError",
    "ErrorCodes",
    "Forbidden",
    "Internal",
    "NotFoundError",
    "PayloadTooLarge",
    "PreconditionFailedError",
    "QueryTooComplex",
    "QueryTooDeep",
    "RateLimited",
    "Unauthenticated",
    "error_code_for",
    "error_extensions",
]

logger = logging.getLogger(__name__)

UNAUTHENTICATED = Unauthenticated.code
FORBIDDEN = Forbidden.code
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
CONFLICT = "CONFLICT"
PRECONDITION_FAILED = "PRECONDITION_FAILED"
RATE_LIMITED = "RATE_LIMITED"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
INTERNAL_ERROR = "INTERNAL_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"

#: What a client sees instead of an unexpected error's own message.
INTERNAL_MESSAGE = "internal error"
#: Problems listed in one error's extensions; the message already summarizes the rest.
_MAX_PROBLEMS = 20


class ApiError(ClientError):
    """An error of the API layer meant for the client; graphql-core copies
    :attr:`extensions` onto the GraphQL error a resolver raises this from."""


class NotFoundError(ApiError):
    code = NOT_FOUND


class BadInput(ApiError):
    code = BAD_USER_INPUT


class ConflictError(ApiError):
    code = CONFLICT


class PreconditionFailedError(ApiError):
    code = PRECONDITION_FAILED


class RateLimited(ApiError):
    """Too many requests; ``retry_after`` is how many seconds until one more is allowed."""

    code = RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def extensions(self) -> dict[str, Any]:
        return {**super().extensions, "retryAfter": round(self.retry_after, 3)}


class QueryTooDeep(ApiError):
    code = QUERY_TOO_DEEP


class QueryTooComplex(ApiError):
    code = QUERY_TOO_COMPLEX


class PayloadTooLarge(ApiError):
    code = PAYLOAD_TOO_LARGE


class Internal(ApiError):
    """A failure on our side; its message is replaced by "internal error" for clients."""

    code = INTERNAL_ERROR


# Exceptions of the layers below, by the code they mean to a client; first match wins.
_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    ((NotFound, CommandNotFound), NOT_FOUND),
    ((AlreadyExists, Conflict), CONFLICT),
    (PreconditionFailed, PRECONDITION_FAILED),
    ((ValidationFailed, QueryRejected), BAD_USER_INPUT),
    ((ModelParsingError, ResolutionError, PolicyError), BAD_USER_INPUT),
    (pydantic.ValidationError, BAD_USER_INPUT),
    (StrawberryInputCoercionError, BAD_USER_INPUT),
    # Most refusals are "someone else must approve" or "needs engineer or admin".
    (ApprovalError, FORBIDDEN),
)


def _is_token_limit(error: GraphQLSyntaxError) -> bool:
    # graphql-core's only signal that MaxTokensLimiter stopped the parse is its message.
    return "Document contains more than" in error.message


def error_code_for(exc: BaseException) -> str:
    """The stable code for ``exc``; anything not known to be the client's fault is
    ``INTERNAL_ERROR``."""
    if isinstance(exc, ClientError):
        return exc.code
    if isinstance(exc, GraphQLError):
        code = (exc.extensions or {}).get("code")
        if isinstance(code, str) and code:
            return code
        if isinstance(exc, GraphQLSyntaxError):
            return QUERY_TOO_COMPLEX if _is_token_limit(exc) else GRAPHQL_PARSE_FAILED
        if exc.original_error is not None and exc.original_error is not exc:
            return error_code_for(exc.original_error)
    for kinds, code in _CODES:
        if isinstance(exc, kinds):
            return code
    return INTERNAL_ERROR


def _problems(exc: BaseException) -> list[dict[str, Any]]:
    """Each field and rule ``exc`` says is broken, in one shape for every layer."""
    if isinstance(exc, TwinServiceError):
        return [{"field": p.field, "rule": p.rule, "message": p.message} for p in exc.problems]
    if isinstance(exc, pydantic.ValidationError):
        # No "input": it would echo whatever the client sent, of any size.
        return [
            {
                "field": ".".join(str(part) for part in error["loc"]),
                "rule": error["type"],
                "message": error["msg"],
            }
            for error in exc.errors(include_url=False)[:_MAX_PROBLEMS]
        ]
    if isinstance(exc, ModelParsingError):
        return [
            {
                "field": error.property or error.primary_id or "",
                "rule": error.validation_id,
                "message": error.cause,
            }
            for error in exc.errors[:_MAX_PROBLEMS]
        ]
    return []


def error_extensions(exc: BaseException) -> dict[str, Any]:
    """``{"code": ...}`` for ``exc``, plus what a client needs to act on it: the
    ``problems`` (field, rule, message) of a validation failure, undefined model ids."""
    if isinstance(exc, ClientError):
        return exc.extensions
    extensions: dict[str, Any] = {"code": error_code_for(exc)}
    if problems := _problems(exc):
        extensions["problems"] = problems[:_MAX_PROBLEMS]
    if isinstance(exc, ResolutionError):
        extensions["undefinedIds"] = exc.undefined_ids[:_MAX_PROBLEMS]
    return extensions


class ErrorCodes(SchemaExtension):
    """Puts ``extensions.code`` on every error of a result and hides internal ones.

    Pass the class itself (not an instance) to ``strawberry.Schema(extensions=[...])``
    so each operation gets its own. Errors are changed in place, so it works whether
    strawberry hands the result over from ``on_operation``, from a stream, or from
    ``get_results`` (the one hook that also runs when a validation rule raised).
    """

    def __init__(self, *, execution_context: Any = None) -> None:
        # Errors without an original exception are graphql-core's own: in validation
        # they are the client's query, in execution its variables or a null we returned.
        self._executing = False

    def on_execute(self) -> Iterator[None]:
        self._executing = True
        yield

    def on_operation(self) -> Iterator[None]:
        yield
        result = getattr(self.execution_context, "result", None)
        self._process(getattr(result, "errors", None))
        initial = getattr(result, "initial_result", None)
        self._process(getattr(initial, "errors", None))

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._process(getattr(result, "errors", None))
        for part in getattr(result, "incremental", None) or ():
            self._process(getattr(part, "errors", None))
        yield

    def get_results(self) -> dict[str, Any]:
        self._process(self.execution_context.pre_execution_errors)
        return {}

    def _process(self, errors: list[GraphQLError] | None) -> None:
        for error in errors or ():
            if not isinstance(error, GraphQLError):
                continue
            code = (error.extensions or {}).get("code")
            if code is not None and (code != INTERNAL_ERROR or error.message == INTERNAL_MESSAGE):
                continue  # done already, or a rule or resolver gave its own code
            self._label(error)

    def _label(self, error: GraphQLError) -> None:
        original = error.original_error
        if isinstance(error, GraphQLSyntaxError):
            extensions: dict[str, Any] = {"code": error_code_for(error)}
        elif self._executing and error.path is None and error.message.startswith("Variable '$"):
            # graphql-core's coercion of the request's variables, whatever it wraps.
            extensions = {"code": BAD_USER_INPUT}
        elif original is not None:
            extensions = error_extensions(original)
            if isinstance(original, TwinServiceError):
                # graphql-core shows only its .message; the full text names each field.
                error.message = str(original)
        elif not self._executing:
            extensions = {"code": GRAPHQL_VALIDATION_FAILED}
        elif error.path is None:
            # Raised before any resolver ran: the variables don't fit their types.
            extensions = {"code": BAD_USER_INPUT}
        else:
            extensions = {"code": INTERNAL_ERROR}
        if extensions["code"] == INTERNAL_ERROR:
            logger.error(
                "internal error at %s: %s",
                ".".join(str(part) for part in error.path or ()) or "(operation)",
                error.message,
                exc_info=original if original is not None else None,
            )
            error.message = INTERNAL_MESSAGE
            extensions = {"code": INTERNAL_ERROR}  # nothing else of the original leaks
        else:
            extensions = {**(error.extensions or {}), **extensions}
        error.extensions = extensions
