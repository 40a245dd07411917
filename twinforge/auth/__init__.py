"""Identity: principals and roles, API keys (argon2), JWTs, and the authenticator that
turns a request's credentials into a principal. Knows nothing about GraphQL.
"""
