"""The simulated plant: the sample factory's layout, its machines' behaviour and faults,
and the simulator that plays them over MQTT and OPC UA as real devices would. Only the
demo, the benches and the tests use it; the server never imports it.
"""
