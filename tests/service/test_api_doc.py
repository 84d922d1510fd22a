"""docs/api.md names every HTTP route the app serves beyond the v1 contract (``../shared/API.md``), and only those."""

from __future__ import annotations

import re
from pathlib import Path

from service.main import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# The paths ../shared/API.md defines (it lives outside the repository, so they are named here).
CONTRACT = {
    "/healthz",
    "/readyz",
    "/v1/datasets",
    "/v1/datasets/{}",
    "/v1/jobs",
    "/v1/jobs/{}",
    "/v1/jobs/{}/cancel",
    "/v1/jobs/{}/metrics",
    "/v1/jobs/{}/artifacts",
    "/v1/jobs/{}/artifacts/{}",
    "/v1/models",
    "/v1/models/{}",
    "/v1/models/{}/predict",
}


def _shape(text: str) -> str:
    """Path parameters without their names: the doc writes ``{id}`` where the code says ``{job_id}``."""
    return re.sub(r"\{[^}]*\}", "{}", text)


def test_docs_api_md_names_every_route_beyond_the_contract(sqlite_settings) -> None:
    app = create_app(sqlite_settings(), run_reaper=False)
    # The API's routes as OpenAPI lists them, and the ones outside the schema (docs, dashboard; not static mounts).
    served = {_shape(path) for path in app.openapi()["paths"]}
    served |= {_shape(route.path) for route in app.routes if getattr(route, "methods", None)}
    assert CONTRACT <= served  # the contract's routes are all still served
    documented = set(re.findall(r"`(?:GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)", _shape(DOC.read_text())))
    assert sorted(served - CONTRACT - documented) == []
    assert sorted(documented - served) == []  # nothing documented that the code does not serve
