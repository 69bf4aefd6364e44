"""`enrich bench`: throughput, latency, memory and Redis cost of the pipeline, measured side by
side in one invocation on the same articles and cores.

Modules: ``corpus`` (articles, reused cyclically with new ids), ``ceiling`` (the stages in
process on 1..N processes), ``e2e`` (publish -> real `enrich worker` -> PostgreSQL),
``naive`` (the plain peer), ``redisstats`` (a private redis-server and its counters),
``report`` (figures, targets, table) and ``command`` (the click command). Importing this
package is cheap: the heavy imports happen when a phase runs.
"""
