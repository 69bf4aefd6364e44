"""Flower's configuration file: `enrich flower` passes it as --conf; Flower runs it itself.

Not imported by the worker. Flower executes this file and takes every top-level name that
matches one of its options as that option, so keep other names private (leading _).
"""

from worker.flower import install_event_scrubber as _install_event_scrubber

# Task args, kwargs and results carry article text: replace them before Flower stores them.
_install_event_scrubber()
