"""Ingest: the pipeline from a received message to the asset hosts. Validation against
the twins' DTDL interfaces, dead letters with their reasons, and the typed entry handed
to the actors. Speaks no protocol: ``twinforge.connectivity`` feeds it.
"""
