"""The explorer site, opened as a person would: the toy's explorer in headless Chromium, from
``file://`` with no server.

Each view is saved as a screenshot under ``tests/artifacts/explorer/`` (or
``$CLIPSPAN_TEST_ARTIFACTS/explorer``). The browser tests skip only when no Chromium binary is
installed (``apt-get install chromium chromium-driver``); Selenium is in the ``test`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

import captum_clipspan as cs
from captum_clipspan.cli import main
from captum_clipspan.explorer.maps import plan_maps
from captum_clipspan.explorer.site import DATA_FILE
from captum_clipspan.toy import toy_bank
from captum_clipspan.toy.probes import family_classifier, read_labels
from captum_clipspan.toy.scenes import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CLIPSPAN_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
N_SCENES = 240
N_IMAGES = 3


def _chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _data(site: Path) -> dict:
    text = (site / DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1:].strip().rstrip(";"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy demo's pieces on a few hundred scenes: model, cache, TextSpan report, labels."""
    folder = tmp_path_factory.mktemp("explorer")
    write_image_folder(folder / "scenes", N_SCENES, seed=0, split="test")
    clip = cs.HookedCLIP.from_pretrained("toy")
    cache = cs.cache_decomposition(clip, folder / "scenes", folder / "cache",
                                   show_progress=False)
    texts, _ = toy_bank()
    report = cs.TextSpan(clip, bank=texts).fit(cache, m=4, show_progress=False)
    report.save(folder / "textspan.pt")
    return clip, cache, report, read_labels(folder / "scenes")["shape"], folder


@pytest.fixture(scope="module")
def site(toy):
    clip, cache, report, labels, folder = toy
    index = cs.explore(cache, report, folder / "site", clip=clip,
                       classifier=family_classifier(clip, "shape"), labels=labels,
                       n_images=N_IMAGES, spotlight=4, show_progress=False)
    return index.parent


def test_site_files_and_data(site, toy):
    _, cache, report, _, _ = toy
    data = _data(site)
    assert {"index.html", "explorer.js", "explorer.css", DATA_FILE} <= {
        p.name for p in site.iterdir()}
    assert [s["key"] for s in data["scores"]] == ["variance", "textspan", "ablation", "alone"]
    assert len(data["heads"]) == len(report) == len(cache.layers) * cache.n_heads
    for image in data["images"].values():
        assert (site / image["thumb"]).is_file()
    head = data["heads"][0]
    assert head["texts"] == report[(head["layer"], head["head"])].texts
    assert all(len(rows) == N_IMAGES for rows in head["top"] + head["bottom"])
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "://" not in html.replace("file://", "")  # nothing fetched from the network


def test_top_images_are_the_extremes_along_each_text(site, toy):
    _, cache, report, _, _ = toy
    head = _data(site)["heads"][-1]
    result = report[(head["layer"], head["head"])]
    terms = cache.term(f"head.{head['layer']}.{head['head']}")
    scores = (terms - result.mean.float()) @ result.basis.float().T
    for j in range(len(result.texts)):
        assert head["top"][j] == scores[:, j].topk(N_IMAGES).indices.tolist()
        assert head["bottom"][j] == scores[:, j].topk(N_IMAGES, largest=False).indices.tolist()


def test_map_plan_shares_the_limit_across_heads_page_images_first():
    plan = plan_maps([[1, 2], [2, 3]], spotlight=[7, 8], limit=6)
    assert plan == [[1, 2, 7], [2, 3, 7]]
    assert plan_maps([[1, 2, 3], [4, 5, 6]], [], limit=4) == [[1, 2], [4, 5]]  # every head
    assert sum(map(len, plan_maps([[1, 2]], [3], limit=0))) == 0


def test_explore_without_files_names_what_to_pass(toy, tmp_path):
    clip, cache, report, _, _ = toy
    with pytest.raises(ValueError, match="one file per cache row"):
        cs.explore(cache, report, tmp_path, images=["a.png"], show_progress=False)


def test_cli_explore_writes_a_site(toy, tmp_path, capsys):
    _, cache, _, _, folder = toy
    out = tmp_path / "site"
    assert main(["explore", str(cache.path), "--textspan", str(folder / "textspan.pt"),
                 "--out", str(out), "--n-images", "2", "--max-patch-maps", "40"]) == 0
    assert f"wrote the explorer to {out / 'index.html'}" in capsys.readouterr().out
    data = _data(out)
    assert data["max_patch_maps"] == 40 and data["grid"] == [8, 8]
    assert sum(len(image.get("maps", {})) for image in data["images"].values()) == 40


# In the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1300,900"):
        options.add_argument(argument)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver")
    service = Service(driver_path) if driver_path else Service()
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "ERROR")]


def _fit_window(driver) -> None:
    """Make the window as tall as the page (up to 4000 px), for a whole-page screenshot."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1300, min(max(height + 40, 700), 4000))


def _shoot(driver, name: str) -> Path:
    """A screenshot of the current view (call :func:`_fit_window` first for all of it)."""
    folder = ARTIFACTS / "explorer"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"explorer-{name}.png"
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1300, 900)
    return path


def _referenced_images_exist(driver) -> int:
    sources = driver.execute_script(
        "return Array.from(document.images, (image) => image.src)")
    missing = [src for src in sources
               if not Path(unquote(urlparse(src).path)).is_file()]
    assert not missing, f"the page references missing images: {missing[:5]}"
    return len(sources)


def _wait(driver, condition, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the page did not reach the expected state in time")


def test_browser_console_errors_are_seen(browser, site):
    """The console check below can fail: a deliberate error shows up in the log."""
    browser.get(site.joinpath("index.html").as_uri())
    browser.execute_script("console.error('probe of the console check')")
    assert any("probe of the console check" in line for line in _console_errors(browser))


def test_views_in_the_browser(browser, site, toy):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, cache, report, _, _ = toy
    data = _data(site)
    url = site.joinpath("index.html").as_uri()
    assert url.startswith("file://")
    browser.get(url)
    browser.get_log("browser")  # start from an empty log

    # The grid: L x H cells, coloured, with the score's unit and description on the page.
    browser.get(url + "#/")
    cells = _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "td.cell"))
    assert len(cells) == len(cache.layers) * cache.n_heads
    assert "variance over all images" in browser.find_element(By.ID, "score-help").text
    _fit_window(browser)
    cell = browser.find_element(By.CSS_SELECTOR, 'td.cell[data-head="3.1"]')
    ActionChains(browser).move_to_element(cell).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    _wait(browser, tooltip.is_displayed)
    assert report[(3, 1)].texts[0] in tooltip.text
    _shoot(browser, "grid")

    # Another colouring: the mean-ablation drop, in points.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "score-select")).select_by_index(2)
    assert "points" in browser.find_element(By.CSS_SELECTOR, ".legend").text
    assert "Zero-shot accuracy lost" in browser.find_element(By.ID, "score-help").text

    # Search: a word in some heads' texts but not all keeps exactly those heads.
    heads = data["heads"]

    def matches(word: str) -> int:
        return sum(any(word in text.lower() for text in head["texts"]) for head in heads)

    words = {word for head in heads for text in head["texts"] for word in text.lower().split()
             if len(word) > 3 and 0 < matches(word) < len(heads)}
    word = min(sorted(words), key=lambda w: abs(matches(w) - len(heads) / 4))
    expected = {head["key"] for head in data["heads"]
                if any(word in text.lower() for text in head["texts"])}
    search = browser.find_element(By.ID, "search")
    search.send_keys(word)
    _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "td.cell.match"))
    matched = {c.get_attribute("data-head")
               for c in browser.find_elements(By.CSS_SELECTOR, "td.cell.match")}
    dimmed = browser.find_elements(By.CSS_SELECTOR, "td.cell.dim")
    assert matched == expected and len(dimmed) == len(cells) - len(expected)
    assert f"{len(expected)} of {len(cells)} heads" in browser.find_element(
        By.ID, "match-count").text
    _fit_window(browser)
    _shoot(browser, "search")

    # A head: click its cell; its texts, images with patch maps, neighbours, similar heads.
    search.clear()
    browser.find_element(By.CSS_SELECTOR, 'td.cell[data-head="3.1"]').click()
    _wait(browser, lambda: "#/head/3.1" in browser.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.text-row")
    assert [row.find_element(By.CSS_SELECTOR, "td.text").text.splitlines()[0]
            for row in rows] == report[(3, 1)].texts
    for row in rows:
        assert len(row.find_elements(By.TAG_NAME, "img")) == 2 * N_IMAGES
        assert len(row.find_elements(By.TAG_NAME, "canvas")) == 2 * N_IMAGES  # patch maps
    assert "patch-map scale" in rows[0].text and "−" in rows[0].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#neighbours img")) > 1
    assert _referenced_images_exist(browser) >= 2 * N_IMAGES * len(rows)
    _fit_window(browser)
    _shoot(browser, "head")

    # An image: click a top image; its contributions per head and its patch maps.
    rows[0].find_element(By.CSS_SELECTOR, "figure.thumb .pic").click()
    _wait(browser, lambda: "#/image/" in browser.current_url)
    contributions = browser.find_elements(By.CSS_SELECTOR, "tr.contrib-row")
    assert len(contributions) == min(12, len(data["heads"]))
    assert all(row.find_elements(By.CSS_SELECTOR, ".coef .val") for row in contributions)
    assert browser.find_elements(By.CSS_SELECTOR, "#image-maps canvas")
    assert "L3.H1" in Select(browser.find_element(By.ID, "head-select")
                             ).first_selected_option.text
    _referenced_images_exist(browser)
    _fit_window(browser)
    _shoot(browser, "image")
    browser.find_element(By.ID, "show-all").click()
    _wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "tr.contrib-row"))
          == len(data["heads"]))

    browser.get(url + "#/about")
    _referenced_images_exist(browser)
    errors = _console_errors(browser)
    assert not errors, errors


def test_spotlight_image_has_every_heads_maps(site):
    data = _data(site)
    for row in data["spotlight"]:
        assert len(data["images"][str(row)]["maps"]) == len(data["heads"])
    assert torch.tensor(data["heads"][0]["similarity"]).shape == (4, 4)
