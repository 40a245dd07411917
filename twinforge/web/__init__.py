"""The ASGI app: ``/graphql`` (HTTP and WebSocket), ``/healthz``, the body-size limit, and
the uvicorn server that serves them."""
