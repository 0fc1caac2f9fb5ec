"""Evaluation: the held-out accuracy benchmark and the per-arm schedule choice.

Why a package of its own: how accuracy is claimed (paired seeds, selection on validation
streets, one measurement on reserved test streets, bootstrap intervals) is a protocol
that judges training, not part of it; keeping it apart from ``training/`` lets it be read,
tested and changed without touching what it measures. The commands:
``python -m xmodelkd_ros.evaluation.benchmark`` and ``python -m xmodelkd_ros.evaluation.choose``.
"""
