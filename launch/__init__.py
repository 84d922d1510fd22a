"""Process wiring: the ``rarefit`` command line and the processes it starts.

The one package allowed to import both ``service`` and ``workers`` (``rarefit serve`` runs the
API and supervises an embedded worker); neither of them imports it.
"""
