"""Enrichment stages: pure functions or small classes, document dict in, document dict out.

No Celery, no settings lookups, no I/O of their own; what they need (models, the dedupe
index) is handed to them by the edges (worker.resources).
"""
