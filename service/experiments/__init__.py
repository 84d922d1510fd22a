"""Experiments: a search over job specs on one dataset, each trial run once per seed as ordinary jobs.

Web-free, so the control worker runs it and the API reads it; docs/experiments.md
tells the whole story. Nothing is re-exported here on purpose: importing the
package must not import Optuna (``study``, ``advance``) into API processes,
which only need ``spec``, ``plan``, ``schemas`` and ``leaderboard``.
"""
