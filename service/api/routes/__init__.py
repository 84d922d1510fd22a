"""One module of routes per resource; each exposes ``router``."""
