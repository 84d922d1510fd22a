"""The HTTP layer: dependencies, the router and thin routes."""
