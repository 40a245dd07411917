"""Ingest: MQTT (paho-mqtt) and OPC UA (asyncua) clients, the embedded broker, topic and
node mapping, dead letters, and the plant simulator. Holds no twin state.
"""
