"""The explorer site, opened as a person would: the toy's explorer in headless Chromium, from
``file://`` with no server. Also: its patch maps equal PatchContribution's, and its neuron pages
hold the neuron lens's reports.

Each view is saved as a screenshot under ``tests/artifacts/explorer/`` (or
``$CLIPSPAN_TEST_ARTIFACTS/explorer``). The browser tests skip only when no Chromium binary is
installed (``apt-get install chromium chromium-driver``); Selenium is in the ``test`` extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from conftest import images_for, small_clip
from PIL import Image

import captum_clipspan as cs
from captum_clipspan.cli import main
from captum_clipspan.explorer.maps import head_patch_maps, pair_maps, plan_maps
from captum_clipspan.explorer.neurons import load_neuron_reports, neuron_pages
from captum_clipspan.explorer.selection import TextBases
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
def lenses(toy):
    """Neuron-lens reports of the toy: layer 1 (40 neurons) and layer 2 (24, saved to a file)
    fitted on the cache's image folder, and layer 0 (8) fitted on a tensor of 16 images (no
    files: it cannot be tied to the cache's rows)."""
    clip, cache, _, _, folder = toy
    texts, _ = toy_bank()
    options = dict(bank=texts, top_k=8, n_components=5)
    tied = cs.NeuronLens(clip, 1, neurons=range(40), **options).fit(
        folder / "scenes", show_progress=False)
    saved = cs.NeuronLens(clip, 2, neurons=range(24), **options).fit(
        folder / "scenes", show_progress=False)
    saved.save(folder / "neurons-2.pt")
    pixels = torch.stack([clip.preprocess(Image.open(file).convert("RGB"))
                          for file in cache.files[:16]])
    untied = cs.NeuronLens(clip, 0, neurons=range(8), **options).fit(pixels, show_progress=False)
    return {1: tied, 2: saved, 0: untied}, folder / "neurons-2.pt"


@pytest.fixture(scope="module")
def site(toy, lenses):
    clip, cache, report, labels, folder = toy
    reports, saved = lenses
    index = cs.explore(cache, report, folder / "site", clip=clip,
                       classifier=family_classifier(clip, "shape"), labels=labels,
                       n_images=N_IMAGES, spotlight=4, neurons=[reports[1], saved, reports[0]],
                       show_progress=False)
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


def _random_bases(clip: cs.HookedCLIP, heads: list[tuple[int, int]], counts: list[int],
                  seed: int = 1) -> TextBases:
    """Unit directions for some heads, padded with zero rows to the largest count."""
    generator = torch.Generator().manual_seed(seed)
    width = clip.visual.output_dim
    basis = torch.zeros(len(heads), max(counts), width, dtype=torch.float64)
    for k, count in enumerate(counts):
        basis[k, :count] = torch.nn.functional.normalize(
            torch.randn(count, width, generator=generator, dtype=torch.float64), dim=-1)
    return TextBases(heads, torch.arange(len(heads)), basis,
                     torch.zeros(len(heads), width, dtype=torch.float64), counts)


class _TensorRows:
    """Stands in for ImageRows: row i's model input is images[i]."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def model_input(self, rows) -> torch.Tensor:
        return self.images[list(rows)]


@pytest.mark.parametrize("variant", ["tok", "clipa"])
@pytest.mark.parametrize("in_pass", [True, False])
def test_pair_maps_equal_patch_contribution_per_head(variant, in_pass):
    """One decomposition for every (image, head) pair = one PatchContribution pass per head,
    projected in the pass on the union of directions or after it in the joint space."""
    clip = small_clip(variant, torch.float64)
    bases = _random_bases(clip, [(0, 1), (2, 3), (1, 0), (2, 0)], [3, 1, 2, 3])
    images = images_for(clip, 5)
    pairs = [(0, 0), (1, 0), (1, 1), (2, 3), (4, 2), (3, 1), (3, 3)]
    maps = pair_maps(clip, images, pairs, bases, in_pass=in_pass)
    assert maps.shape == (len(pairs), 3, *clip.visual.grid_size)
    for got, (i, k) in zip(maps, pairs, strict=True):
        count = bases.counts[k]
        expected = cs.PatchContribution(clip, heads=[bases.heads[k]]).attribute(
            images[i:i + 1], texts=bases.basis[k, :count])[0]
        assert expected.abs().max() > 1e-4  # a real map, not zeros on both sides
        torch.testing.assert_close(got[:count], expected, rtol=0, atol=1e-10)
        assert not got[count:].any()  # the padding rows of a head with fewer texts


def test_head_patch_maps_follow_the_plan_in_bounded_batches(monkeypatch):
    clip = small_clip("tok", torch.float64)
    bases = _random_bases(clip, [(2, 1), (0, 3), (1, 2)], [2, 3, 1])
    images = images_for(clip, 6)
    plan = [[4, 0, 5], [0], [1, 4, 2]]
    import captum_clipspan.explorer.maps as maps_module

    passes = []

    def counted(clip, inputs, pairs, bases):
        passes.append(len(inputs))
        return pair_maps(clip, inputs, pairs, bases)

    monkeypatch.setattr(maps_module, "pair_maps", counted)
    reference = head_patch_maps(clip, _TensorRows(images), bases, plan, batch_size=4,
                                show_progress=False)
    assert passes == [4, 1]  # five images, batch_size 4
    # A budget of one image's terms: one image per pass, the same maps.
    monkeypatch.setattr(maps_module, "MAP_BUDGET", 1)
    single = head_patch_maps(clip, _TensorRows(images), bases, plan, batch_size=4,
                             show_progress=False)
    assert passes[2:] == [1] * 5
    assert set(reference.maps) == {(row, k) for k, rows in enumerate(plan) for row in rows}
    assert set(single.maps) == set(reference.maps)
    scale = torch.zeros(3, 3)
    for (row, k), value in reference.maps.items():
        count = bases.counts[k]
        expected = cs.PatchContribution(clip, heads=[bases.heads[k]]).attribute(
            images[row:row + 1], texts=bases.basis[k, :count])[0].float()
        assert value.shape == (count, *clip.visual.grid_size)
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)  # float32 storage
        torch.testing.assert_close(single.maps[(row, k)], value, rtol=0, atol=0)
        scale[k, :count] = torch.maximum(scale[k, :count], expected.abs().amax((1, 2)))
    torch.testing.assert_close(reference.scale, scale)


def _neuron_texts(layer: dict, neuron: dict) -> list[tuple[str, float]]:
    return [(layer["texts"][index], value) for index, value in neuron["texts"]]


def test_neuron_data_holds_the_reports(site, toy, lenses):
    _, cache, _, _, _ = toy
    reports, _ = lenses
    data = _data(site)
    assert [layer["layer"] for layer in data["neurons"]] == [0, 1, 2]
    for layer in data["neurons"]:
        report = reports[layer["layer"]]
        assert [n["neuron"] for n in layer["neurons"]] == report.strongest()
        assert layer["count"] == report.count
        for neuron in layer["neurons"]:
            row = report.row(neuron["neuron"])
            texts, values = zip(*report.texts_of(neuron["neuron"]), strict=True)
            assert [text for text, _ in _neuron_texts(layer, neuron)] == list(texts)
            assert [value for _, value in _neuron_texts(layer, neuron)] == pytest.approx(
                values, rel=1e-3)
            assert neuron["text_variance"] == pytest.approx(
                100 * float(report.text_variance[row]), abs=0.01)
            if not layer["tied"]:
                assert neuron["top"] == []
                continue
            # The lens's top images, as cache rows: the same files, largest first.
            expected = [os.path.realpath(report.files[i])
                        for i in report.images_of(neuron["neuron"], 6).tolist()]
            assert [os.path.realpath(cache.files[r]) for r, _ in neuron["top"]] == expected
            for cache_row, _ in neuron["top"]:
                assert (site / data["images"][str(cache_row)]["thumb"]).is_file()
    untied = data["neurons"][0]
    assert not untied["tied"] and "cannot be tied" in untied["note"]
    assert data["neurons"][1]["tied"] and data["neurons"][1]["note"] is None


def test_neuron_rows_follow_the_files_not_the_positions(toy, lenses):
    _, cache, _, _, _ = toy
    report = lenses[0][1]
    files = list(reversed(cache.files))  # the same images in another order
    pages = neuron_pages([report], files, n_images=3)
    last = len(files) - 1
    for neuron in pages.layers[0]["neurons"]:
        rows = report.images_of(neuron["neuron"], 3).tolist()
        assert [row for row, _ in neuron["top"]] == [last - r for r in rows]
    elsewhere = neuron_pages([report], [Path("/nowhere") / f.name for f in cache.files])
    assert not elsewhere.layers[0]["tied"] and "no file in common" in elsewhere.layers[0]["note"]
    assert elsewhere.rows == [] and all(not n["top"] for n in elsewhere.layers[0]["neurons"])


def test_neuron_image_limit_is_shared_across_neurons(toy, lenses):
    _, cache, _, _, _ = toy
    report = lenses[0][1]
    full = neuron_pages([report], cache.files, n_images=4, max_images=10_000)
    limited = neuron_pages([report], cache.files, n_images=4, max_images=10)
    shown = neuron_pages([report], cache.files, n_images=4, max_images=0, shown=full.rows)
    assert len(limited.rows) == 10 < len(full.rows)
    assert shown.rows == [] and shown.layers == full.layers  # rows shown anyway are free
    for whole, part in zip(full.layers[0]["neurons"], limited.layers[0]["neurons"], strict=True):
        assert part["top"] == whole["top"][:len(part["top"])]  # a prefix: largest first
        assert {row for row, _ in part["top"]} <= set(limited.rows)
    # In turn across neurons: the strongest neurons' first images come before anyone's second.
    firsts = list(dict.fromkeys(n["top"][0][0] for n in full.layers[0]["neurons"]))
    assert limited.rows == firsts[:10]


def test_neuron_reports_of_another_model_or_a_repeated_layer_are_refused(toy, lenses):
    _, cache, _, _, _ = toy
    reports, saved = lenses
    other = dataclasses.replace(reports[1], fingerprint="0" * 16)
    with pytest.raises(ValueError, match="another model"):
        load_neuron_reports([other], cache.meta["fingerprint"])
    with pytest.raises(ValueError, match="one neuron report per layer"):
        load_neuron_reports([reports[2], saved])
    assert load_neuron_reports(saved)[0].layer == 2


def test_a_rebuild_keeps_unchanged_thumbnails_and_removes_stale_ones(toy, tmp_path):
    _, cache, report, _, _ = toy

    def build(**options) -> tuple[set[str], dict[str, int]]:
        cs.explore(cache, report, tmp_path, show_progress=False, **options)
        referenced = {Path(image["thumb"]).name for image in _data(tmp_path)["images"].values()}
        files = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "thumbs").iterdir()}
        assert set(files) == referenced
        return referenced, files

    first, written = build(n_images=2)
    again, rewritten = build(n_images=2)
    assert again == first and rewritten == written  # the same bytes: left alone
    smaller, changed = build(n_images=1, thumb_size=32)
    assert smaller < first  # fewer images: the others' thumbnails are gone
    assert all(changed[name] != written[name] for name in smaller)  # new bytes: rewritten
    with Image.open(tmp_path / "thumbs" / next(iter(smaller))) as thumbnail:
        assert max(thumbnail.size) == 32


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
    assert data["neurons"] == []


def test_cli_explore_with_neurons(toy, lenses, tmp_path, capsys):
    _, cache, _, _, folder = toy
    _, saved = lenses
    out = tmp_path / "site"
    assert main(["explore", str(cache.path), "--textspan", str(folder / "textspan.pt"),
                 "--out", str(out), "--n-images", "2", "--max-patch-maps", "0",
                 "--neurons", str(saved), "--neuron-images", "2"]) == 0
    layers = _data(out)["neurons"]
    assert [layer["layer"] for layer in layers] == [2] and len(layers[0]["neurons"]) == 24
    assert all(len(neuron["top"]) == 2 for neuron in layers[0]["neurons"])
    assert main(["explore", str(cache.path), "--textspan", str(folder / "textspan.pt"),
                 "--out", str(out), "--neurons", str(folder / "textspan.pt")]) == 2
    assert "not a saved NeuronReport" in capsys.readouterr().err


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
    # The window's own frame takes some of its height: grow it by what the page still lacks.
    missing = height - driver.execute_script("return window.innerHeight")
    if missing > 0:
        size = driver.get_window_size()
        driver.set_window_size(1300, min(size["height"] + missing + 20, 4000))


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


def test_neuron_views_in_the_browser(browser, site, lenses):
    from selenium.webdriver.common.by import By

    reports, _ = lenses
    data = _data(site)
    url = site.joinpath("index.html").as_uri()
    browser.get(url)
    browser.get_log("browser")  # start from an empty log

    # The grid links to the neurons; the list shows each report's neurons, per layer.
    browser.get(url + "#/")
    assert "neuron list" in _wait(browser, lambda: browser.find_element(By.ID, "neuron-note")).text
    browser.find_element(By.ID, "nav-neurons").click()
    _wait(browser, lambda: "#/neurons" in browser.current_url)
    sections = _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR,
                                                            "section.neuron-layer"))
    assert [int(s.get_attribute("data-layer")) for s in sections] == [0, 1, 2]
    for section in sections:
        report = reports[int(section.get_attribute("data-layer"))]
        assert f"{len(report)} neurons" in section.find_element(By.TAG_NAME, "h2").text
        assert len(section.find_elements(By.CSS_SELECTOR, "tr.neuron-row")) == len(report)
    total = sum(len(report) for report in reports.values())
    assert f"{total} neurons in 3 layers" in browser.find_element(By.ID, "neuron-count").text
    assert "texts only" in sections[0].text  # the report fitted on tensors says so

    # Search: a word in some neurons' texts but not all keeps exactly those neurons.
    keys = {f"{layer['layer']}.{n['neuron']}": [t.lower() for t, _ in _neuron_texts(layer, n)]
            for layer in data["neurons"] for n in layer["neurons"]}

    def matches(word: str) -> set[str]:
        return {key for key, texts in keys.items() if any(word in text for text in texts)}

    words = {word for texts in keys.values() for text in texts for word in text.split()
             if len(word) > 3 and 0 < len(matches(word)) < len(keys)}
    word = min(sorted(words), key=lambda w: abs(len(matches(w)) - len(keys) / 4))
    search = browser.find_element(By.ID, "search")
    search.send_keys(word)
    _wait(browser, lambda: f"of {total} neurons" in browser.find_element(
        By.ID, "neuron-count").text)
    shown = {row.get_attribute("data-neuron")
             for row in browser.find_elements(By.CSS_SELECTOR, "tr.neuron-row")}
    assert shown == matches(word)
    assert f"{len(matches(word))} of {total} neurons" in browser.find_element(
        By.ID, "neuron-count").text
    assert browser.find_elements(By.CSS_SELECTOR, "tr.neuron-row mark")
    _fit_window(browser)
    _shoot(browser, "neurons")

    # A neuron: click the strongest of layer 1; its texts with coefficients, its top images.
    search.clear()
    search.send_keys(" ")  # an input event with an empty query: every neuron again
    report = reports[1]
    neuron = report.strongest(1)[0]
    link = _wait(browser, lambda: browser.find_elements(
        By.CSS_SELECTOR, f'tr.neuron-row[data-neuron="1.{neuron}"] a'))
    link[0].click()
    _wait(browser, lambda: f"#/neuron/1.{neuron}" in browser.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#neuron-texts tr.neuron-text")
    expected = report.texts_of(neuron)
    assert [row.text.split(None, 2)[-1] for row in rows] == [text for text, _ in expected]
    assert rows[0].find_element(By.CSS_SELECTOR, ".val").text == f"{expected[0][1]:+.4f}"
    page = browser.find_element(By.ID, "view").text
    row = report.row(neuron)
    assert f"texts explain: {100 * float(report.text_variance[row]):.1f}%" in page
    assert "unit-norm image embedding" in page and "Coefficient" in page
    pictures = browser.find_elements(By.CSS_SELECTOR, "#neuron-images img")
    assert len(pictures) == len(report.images_of(neuron, 6)) > 0
    assert _referenced_images_exist(browser) == len(pictures)
    _fit_window(browser)
    _shoot(browser, "neuron")

    # Its top image's page lists the neuron; a neuron of the untied report shows texts only.
    browser.find_element(By.CSS_SELECTOR, "#neuron-images figure.thumb .pic").click()
    _wait(browser, lambda: "#/image/" in browser.current_url)
    assert f"L1.N{neuron}" in browser.find_element(By.ID, "image-neurons").text
    untied = reports[0].strongest(1)[0]
    browser.get(url + f"#/neuron/0.{untied}")
    note = _wait(browser, lambda: browser.find_elements(By.ID, "neuron-untied"))
    assert "texts only" in note[0].text
    assert not browser.find_elements(By.CSS_SELECTOR, "#neuron-images img")
    assert browser.find_elements(By.CSS_SELECTOR, "#neuron-texts tr.neuron-text")
    errors = _console_errors(browser)
    assert not errors, errors
