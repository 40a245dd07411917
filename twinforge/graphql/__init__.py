"""GraphQL: the strawberry schema (generic types, plus types generated per DTDL
interface), resolvers, pagination and query rules. Holds no business logic and no
identity code (``twinforge.auth``); ``twinforge.web`` serves it. A subpackage on purpose:
a top-level ``graphql`` would shadow graphql-core.
"""
