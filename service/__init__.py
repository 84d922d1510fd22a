"""rarefit service: HTTP API, persistence and queueing (never imports ``workers``)."""
