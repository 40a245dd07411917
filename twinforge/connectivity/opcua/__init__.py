"""OPC UA (asyncua): node mapping, telemetry subscriptions and method calls for commands."""
