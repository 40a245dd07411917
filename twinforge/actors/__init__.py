"""Actors: asset state with ring buffers and alarms, the write-ahead log, asset hosts on
Ray, placement (asset id to host) and graph sync. Actors never talk to clients directly.
"""
