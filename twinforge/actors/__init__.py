"""Actors: the Ray asset actor, placement (asset id to actor), and supervision and
recovery. Actors never talk to clients directly.
"""
