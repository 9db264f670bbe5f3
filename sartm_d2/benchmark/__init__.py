"""Benchmark library behind ``tools/benchmark.py``: ``measure`` (build the model and inputs, time and
count things) and ``report`` (derive figures, check the GPU targets, compare with the official
release, format the tables), the CLI keeping only argument parsing and orchestration.

A package rather than modules beside the script, so that other code (further benchmark rows, tests)
imports ``sartm_d2.benchmark.measure`` like any other module, without loading a script by path or
editing ``sys.path``. ``sartm_d2/__init__.py`` does not import it and this file imports neither
submodule: ``import sartm_d2`` costs nothing more, and ``report`` can be used without ``measure``.
The reference figures and targets are data in the repository's ``benchmarks/`` folder (see
``report``), not constants here.
"""
