"""Connectivity: protocol adapters in both directions. ``mqtt`` (the one topic and payload
contract, the client, the embedded broker, telemetry in, commands out) and ``opcua``
(node mapping, subscriptions in, method calls out). Holds no twin state.
"""
