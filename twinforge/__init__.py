"""twinforge: a digital-twin graph server for factories.

DTDL models describe asset types; parsed interfaces instantiate a twin graph; every asset
is a live actor holding its telemetry, models and commands; a GraphQL API serves queries,
subscriptions and control.
"""

__version__ = "0.1.0"
