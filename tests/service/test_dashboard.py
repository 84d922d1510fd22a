"""/ui and /docs are served from the package: every asset they name is local and answers 200."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/ui", "/docs"])
def test_pages_name_only_local_assets_and_each_is_served(api_client, page):
    response = api_client.get(page)
    assert response.status_code == 200 and "default-src 'self'" in response.headers["Content-Security-Policy"]
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assert assets, response.text
    for asset in assets:
        if asset.startswith(("data:", "#")):
            continue
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert api_client.get(asset).status_code == 200, asset
    assert not re.search(r"https?://", response.text.replace("http://www.w3.org", ""))


def test_the_dashboards_script_calls_only_the_v1_api(api_client):
    script = api_client.get("/ui/static/app.js").text
    assert not re.search(r"https?://", script)
    assert set(re.findall(r"[`\"'](/[a-z0-9]+)/", script)) <= {"/v1"}


def test_the_vendored_chart_library_ships_with_its_licence(api_client):
    assert "MIT License" in api_client.get("/ui/static/vendor/uPlot.LICENSE").text
    assert api_client.get("/ui/static/vendor/uPlot.iife.min.js").status_code == 200


def test_redoc_from_a_cdn_is_gone(api_client):
    assert api_client.get("/redoc").status_code == 404
