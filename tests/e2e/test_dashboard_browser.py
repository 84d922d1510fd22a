"""The dashboard in real headless Chromium against a real ``rarefit serve``: what a new user does, end to end.

Sign in with the bootstrap key, upload PneumoniaMNIST, start a job, watch its
curve gain points while it trains, read the PR curve, ROC curve, reliability
diagram and confusion matrix of the finished job (the charts' data against the
API's metrics), predict by uploading an image, open /docs; then the browser's own request log proves
that no request left this server. Screenshots go to ``$TEST_ARTIFACTS_DIR``
(default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from availability import unavailable
from PIL import Image

pytestmark = pytest.mark.e2e

TRAIN_TIMEOUT_S = 15 * 60


def _system_chromium() -> tuple[str | None, str | None]:
    """Debian's Chromium and its driver, installed on first use where this user may (the suite's own set-up:
    pip cannot install a browser, and Playwright's browser download is not reachable here)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found) or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
    ):
        subprocess.run(command, check=False, capture_output=True, timeout=900)
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    chromium_path, driver_path = _system_chromium()
    if not (chromium_path and driver_path):
        unavailable("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def requested_urls(driver, seen: list[str]) -> list[str]:
    """Every URL the page asked the network for since the last call (Chrome's DevTools log)."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            seen.append(message["params"]["request"]["url"])
    return seen


def wait_until(driver, condition, *, timeout: float, what: str):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A page re-renders when its data arrives: an element read mid-render is simply read again.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(lambda d: condition(d), message=what)


def chart_points(driver, name: str) -> int:
    return driver.execute_script(f"const c = window.rarefit.charts[{name!r}]; return c ? c.data[0].length : 0;")


def test_a_new_user_trains_watches_and_reads_a_model_in_the_browser(start_server, browser, pneumonia_npz, tmp_path):
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("TEST_ARTIFACTS_DIR", tmp_path)) / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    server = start_server()
    urls: list[str] = []
    find = browser.find_element

    browser.get(f"{server.base_url}/ui")
    find(By.ID, "api-key").send_keys("rf_not-a-real-key-000000000000000000")
    find(By.ID, "sign-in").click()
    wait_until(browser, lambda d: "refused" in find(By.ID, "sign-in-error").text, timeout=30, what="a bad key refused")
    find(By.ID, "api-key").clear()
    find(By.ID, "api-key").send_keys(server.api_key)
    find(By.ID, "sign-in").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "job-form"), timeout=30, what="the jobs page")

    browser.get(f"{server.base_url}/ui#/datasets")
    wait_until(browser, lambda d: d.find_elements(By.ID, "upload-file"), timeout=30, what="the datasets page")
    find(By.ID, "upload-file").send_keys(str(pneumonia_npz))
    find(By.ID, "upload-name").send_keys("pneumonia")
    find(By.CSS_SELECTOR, "#upload-form button").click()
    wait_until(browser, lambda d: "pneumonia" in find(By.ID, "datasets").text, timeout=120, what="the upload")
    assert "1214" in find(By.ID, "datasets").text and "3494" in find(By.ID, "datasets").text
    # The upload opens the new dataset: its diagnostics panel and the grid of images per class (fetched with the key).
    grid_width = "const img = document.getElementById('samples'); return img && img.complete ? img.naturalWidth : 0;"
    wait_until(browser, lambda d: d.execute_script(grid_width) > 0, timeout=60, what="the sample grid")
    assert find(By.ID, "samples").get_attribute("src").startswith("blob:")
    assert "Diagnostics" in find(By.ID, "diagnostics").text
    browser.save_screenshot(str(shots / "datasets.png"))

    browser.get(f"{server.base_url}/ui#/jobs")
    wait_until(browser, lambda d: d.find_elements(By.ID, "job-epochs"), timeout=30, what="the job form")
    find(By.ID, "job-epochs").clear()
    find(By.ID, "job-epochs").send_keys("2")
    find(By.CSS_SELECTOR, "#job-form button").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "curves"), timeout=30, what="the job page")
    job_id = browser.current_url.rsplit("/", 1)[1]

    wait_until(browser, lambda d: chart_points(d, "curves") >= 1, timeout=TRAIN_TIMEOUT_S, what="a first epoch")
    assert find(By.ID, "job-status").text == "running"  # watched while it trains
    browser.save_screenshot(str(shots / "job-running.png"))
    wait_until(browser, lambda d: chart_points(d, "curves") == 2, timeout=TRAIN_TIMEOUT_S, what="the curve to grow")
    wait_until(browser, lambda d: chart_points(d, "pr") > 0, timeout=TRAIN_TIMEOUT_S, what="the PR curve")
    assert find(By.ID, "job-status").text == "succeeded"
    browser.save_screenshot(str(shots / "job-finished.png"))

    headers = {"Authorization": f"Bearer {server.api_key}"}
    metrics = httpx.get(f"{server.base_url}/v1/jobs/{job_id}/metrics", headers=headers).json()
    curve = browser.execute_script("return window.rarefit.charts.curves.data;")
    assert curve[0] == [1, 2] and curve[1] == [row["train_loss"] for row in metrics["history"]]
    pr = browser.execute_script("return window.rarefit.charts.pr.data;")
    expected = sorted(metrics["test"]["pr_curve"], key=lambda p: p["recall"])
    assert pr[0] == [p["recall"] for p in expected] and pr[1] == [p["precision"] for p in expected]
    roc, points = browser.execute_script("return window.rarefit.charts.roc.data;"), metrics["test"]["roc_curve"]
    assert len(points) > 1 and roc[0] == [0] + [p["fpr"] for p in points] and roc[2] == [0] + [p["tpr"] for p in points]
    bins = browser.execute_script("return window.rarefit.charts.reliability.data;")
    calibration = metrics["test"]["calibration"]
    assert bins[2] == [b["accuracy"] for b in calibration["reliability_before"]]
    assert bins[3] == [b["accuracy"] for b in calibration["reliability_after"]]
    cells = [
        [float(td.text) for td in tr.find_elements(By.TAG_NAME, "td")]
        for tr in find(By.ID, "confusion").find_elements(By.TAG_NAME, "tr")[1:]
    ]
    matrix = np.array(metrics["test"]["confusion_matrix"], dtype=float)
    assert np.allclose(cells, matrix / matrix.sum(axis=1, keepdims=True), atol=0.005)

    model_id = httpx.get(f"{server.base_url}/v1/jobs/{job_id}", headers=headers).json()["model_id"]
    image = tmp_path / "xray.png"
    Image.fromarray(np.load(pneumonia_npz)["test_images"][0]).save(image)
    browser.get(f"{server.base_url}/ui#/models/{model_id}")
    wait_until(browser, lambda d: d.find_elements(By.ID, "predict-file"), timeout=30, what="the model page")
    find(By.ID, "predict-file").send_keys(str(image))
    wait_until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#prediction .label"), timeout=60, what="a prediction"
    )
    with image.open("rb") as handle:
        answer = httpx.post(
            f"{server.base_url}/v1/models/{model_id}/predict",
            headers=headers,
            files={"files": ("xray.png", handle, "image/png")},
        ).json()
    assert find(By.CSS_SELECTOR, "#prediction .label").text == answer["predictions"][0]["label"]
    browser.save_screenshot(str(shots / "predict.png"))

    browser.get(f"{server.base_url}/docs")
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), timeout=60, what="docs")
    browser.save_screenshot(str(shots / "docs.png"))

    requested_urls(browser, urls)
    assert any(u.endswith("/ui/static/vendor/uPlot.iife.min.js") for u in urls)
    outside = [u for u in urls if not u.startswith((server.base_url, "data:", "blob:"))]
    assert outside == [], f"requests that left the server: {outside}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert errors == [], errors
