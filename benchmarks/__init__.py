"""csp_mp benchmarks: each figure of docs/design.md against its peers, measured in the same run.

Families: ``local`` (one P), ``transport`` (shared-memory transport), ``parallel`` (several Ps).
Each family module exposes ``run(quick: bool) -> list[dict]``; ``python -m benchmarks`` runs them
all, prints one table and writes ``benchmarks/results/latest.json``.

``concurrency_vs_parallelism`` is not a family: it is the benchmark ``python -m csp_mp bench``
(``make run``) runs, kept here, outside the package, with the others.
"""
