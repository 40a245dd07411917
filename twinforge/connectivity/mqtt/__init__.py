"""MQTT: the topic and payload contract (``topics``), a buffered paho client, the embedded
broker, telemetry and property ingest, and commands with their replies."""
