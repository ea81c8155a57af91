"""Evaluation: the records store, BD deltas, rate curves, anchors, latency, sweeps, the bench.

``mvmic curves|anchors|sweep|latency`` run :mod:`.curves`, :mod:`.anchors`, :mod:`.sweep` and
:mod:`.latency`; ``tools/bench_rate_accuracy.py`` runs :mod:`.bench`.
"""
