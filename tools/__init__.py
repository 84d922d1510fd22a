"""Development tooling (not shipped: ``[tool.setuptools.packages.find]`` leaves it out)."""
