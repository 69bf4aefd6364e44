"""Stage quality evaluation: `enrich eval {lang,clean,ner,dedupe}`.

Runs the project's own stages exactly as the worker builds them (``worker.resources.
Resources(settings, embedded=True).pipeline``) on the shared evaluation data
(../shared/eval, see its README for formats and definitions), optionally next to a plain
peer (``--baseline``), and scores both with the pure functions of
:mod:`worker.evaluation.scoring`.

- :mod:`.scoring`  pure scoring (token / line / span / pairwise / accuracy figures)
- :mod:`.readers`  where the data is, JSON Lines reading, ``--limit``
- :mod:`.lang`, :mod:`.clean`, :mod:`.ner`, :mod:`.dedupe`  one evaluation per stage
- :mod:`.report`   the rich table; :mod:`.command` the click command
"""
