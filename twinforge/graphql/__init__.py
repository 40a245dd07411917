"""GraphQL: the strawberry schema (generic, plus types generated per DTDL interface),
authentication and authorization, and the FastAPI app. Holds no business logic. A
subpackage on purpose: a top-level ``graphql`` would shadow graphql-core.
"""
