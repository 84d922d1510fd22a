"""rarefit's public Python package: the contracts shared by the service, the workers and users.

``rarefit.decision`` (numpy only) is the one decision rule that training metrics and hosted
inference both apply; user-facing tools (the HTTP client) live here too.
"""
