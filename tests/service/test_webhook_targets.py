"""Webhook targets: loopback, private, link-local and reserved addresses are refused unless allowed."""

from __future__ import annotations

import pytest

from service.webhooks import target_problem

REFUSED = [
    "http://127.0.0.1:8000/x",
    "http://localhost/x",
    "http://[::1]/x",
    "http://10.1.2.3/x",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://0.0.0.0/x",
    "http://100.64.0.1/x",
    "http://224.0.0.1/x",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_targets_are_refused_and_allowed_only_by_the_operator(url):
    problem = target_problem(url, allow_private=False)
    assert problem is not None and "RAREFIT_WEBHOOKS_ALLOW_PRIVATE" in problem
    assert target_problem(url, allow_private=True) is None


def test_a_public_address_is_accepted():
    assert target_problem("https://93.184.215.14/hook", allow_private=False) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("ftp://93.184.215.14/x", "scheme"), ("http:///x", "no host"), ("http://[::1/x", "valid URL")],
)
def test_malformed_targets_say_why(url, fragment):
    assert fragment in target_problem(url, allow_private=True)


def test_the_api_refuses_an_ssrf_target_with_a_422_naming_url(api_client, alpha):
    for url in ("http://127.0.0.1:5432/", "http://169.254.169.254/latest/meta-data"):
        response = api_client.post("/v1/webhooks", json={"url": url, "events": ["job.succeeded"]}, headers=alpha)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "url"]
    assert api_client.get("/v1/webhooks", headers=alpha).json() == []
