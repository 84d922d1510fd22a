"""The live API fixtures (``tests/live_api.py``)."""

from live_api import live_server, small_npz  # noqa: F401 - fixtures
