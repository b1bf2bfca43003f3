"""Tests for the shipped text banks and for ``scripts/build_text_banks.py``, which builds them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "build_text_banks.py"
BANK_DIR = ROOT / "captum_clipspan" / "text_banks"
MIN_LINES = {"general.txt": 2000, "words.txt": 2000, "templates.txt": 20}

# A few phrases per family that the bank must contain (substring match, case-insensitive,
# within that family). Removing a family or gutting its lists makes this fail.
FAMILY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "colors": ("image with a red color", "blue", "pastel colors"),
    "textures": ("an image of wavy texture", "surface", "wood grain"),
    "materials": ("made of", "wooden", "glass"),
    "shapes_and_patterns": ("circle", "pattern", "stripes"),
    "counts": ("three objects", "a pair of shoes", "a single"),
    "sizes": ("tiny", "huge", "something very small"),
    "cities": ("photo taken in paris", "tokyo", "skyline"),
    "countries_and_regions": ("an image of japan", "india", "brazil"),
    "landscapes": ("mountain", "beach", "desert"),
    "weather": ("bright sunny day", "rain", "snow"),
    "time_of_day_and_seasons": ("sunset", "at night", "winter"),
    "lighting": ("lighting", "shadows", "candlelight"),
    "art_styles": ("a watercolor painting", "sketch", "in the style of"),
    "photo_styles": ("a black and white photo", "a blurry photo", "a selfie"),
    "viewpoints_and_composition": ("an aerial view", "close-up", "from below"),
    "objects": ("chair", "umbrella", "clock"),
    "animals": ("picture of a dog", "cat", "bird"),
    "food_and_drink": ("pizza", "coffee", "fruit"),
    "vehicles": ("car", "bicycle", "airplane"),
    "plants": ("tree", "flower", "cactus"),
    "buildings_and_architecture": ("church", "skyscraper", "architecture"),
    "indoor_scenes": ("kitchen", "bedroom", "classroom"),
    "people_and_ages": ("baby", "old woman", "teenager"),
    "people_activities": ("running", "playing guitar", "reading a book"),
    "clothing": ("wearing", "dress", "hat"),
    "professions": ("doctor", "firefighter", "chef"),
    "numbers_of_people": ("two people", "a crowd of people", "no people"),
    "emotions_and_moods": ("happy", "sad", "atmosphere"),
    "text_in_images": ("an image with the word 'stop'", "a sign with text", "handwritten"),
    "sports_and_events": ("birthday party", "wedding", "tennis"),
    "body_parts": ("hand", "eye", "face"),
    "symbols_and_diagrams": ("map", "chart", "the flag of"),
    "space_and_sky": ("the moon", "galaxy", "planet"),
}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The build script, imported from its file (scripts/ is not a package)."""
    name = "_captum_clipspan_build_text_banks"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def _lines(name: str) -> list[str]:
    text = (BANK_DIR / name).read_bytes().decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text[:-1].split("\n")


def test_shipped_files_equal_script_output(script: ModuleType) -> None:
    built = script.build_all()
    assert sorted(built) == sorted(MIN_LINES)
    for name, text in built.items():
        assert (BANK_DIR / name).read_bytes() == text.encode("utf-8"), (
            f"{name} is stale: run `python scripts/build_text_banks.py`"
        )


def test_script_cli_writes_identical_files_and_check_detects_edits(
    script: ModuleType, tmp_path: Path
) -> None:
    assert script.main(["--out", str(tmp_path)]) == 0
    for name in MIN_LINES:
        assert (tmp_path / name).read_bytes() == (BANK_DIR / name).read_bytes()
    assert script.main(["--check", "--out", str(tmp_path)]) == 0
    with (tmp_path / "words.txt").open("a", encoding="utf-8") as f:
        f.write("extra\n")
    assert script.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(MIN_LINES))
def test_bank_entries_are_many_distinct_and_clean(name: str) -> None:
    lines = _lines(name)
    assert len(lines) >= MIN_LINES[name]
    for line in lines:
        assert line and line == line.strip() and "  " not in line, repr(line)
    assert len({line.casefold() for line in lines}) == len(lines)


def test_words_are_sorted_single_lowercase_words() -> None:
    words = _lines("words.txt")
    assert words == sorted(words)
    assert all(re.fullmatch(r"[a-z]+", word) for word in words)
    for common in ("dog", "chair", "apple", "hammer", "violin", "bridge", "shoe", "tree"):
        assert common in words


def test_every_family_is_represented(script: ModuleType) -> None:
    families = script.build_general_families()
    assert list(families) == list(FAMILY_KEYWORDS)
    for family, keywords in FAMILY_KEYWORDS.items():
        phrases = [p.casefold() for p in families[family]]
        for keyword in keywords:
            assert any(keyword in p for p in phrases), f"{keyword!r} missing from {family}"
    shipped = _lines("general.txt")
    assert shipped == [p for phrases in families.values() for p in phrases]


def test_families_are_balanced(script: ModuleType) -> None:
    families = script.build_general_families()
    total = sum(len(p) for p in families.values())
    caps = {family.name: family.cap for family in script.FAMILIES}
    for family, phrases in families.items():
        assert 20 <= len(phrases) <= caps[family], family
        assert len(phrases) <= 0.05 * total, f"{family} dominates the bank"


def test_templates_have_exactly_one_placeholder() -> None:
    templates = _lines("templates.txt")
    assert 20 <= len(templates) <= 40
    for template in templates:
        assert template.count("{}") == 1, template
        assert "{" not in template.format("dog"), template


def test_articles_agree_with_the_next_word(script: ModuleType) -> None:
    assert script.indefinite("owl") == "an owl"
    assert script.indefinite("unicorn") == "a unicorn"
    assert script.indefinite("X-ray") == "an X-ray"
    with pytest.raises(ValueError, match="should use 'an'"):
        script.check_articles("A olive green background")
    bad = [p for p in _lines("general.txt") if re.search(r"\b[Aa] [aeio]", p)]
    assert bad == []


def test_duplicate_word_is_rejected(script: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "words.txt"
    source.write_text("# a comment\n## a\ndog cat\n\n## b\ncat\n")
    assert script.load_words(source) == {"a": ["dog", "cat"], "b": ["cat"]}
    with pytest.raises(ValueError, match="listed under both"):
        script.build_words(script.load_words(source))
    with pytest.raises(ValueError, match="single lowercase word"):
        script.build_words({"a": ["Dog"]})
    source.write_text("dog\n## a\ncat\n")
    with pytest.raises(ValueError, match="before the first"):
        script.load_words(source)


def test_inputs_are_data_files_not_literals() -> None:
    """The hand-written inputs live in scripts/text_bank_sources/, read by the script."""
    import json

    sources = ROOT / "scripts" / "text_bank_sources"
    families = json.loads((sources / "general.json").read_text(encoding="utf-8"))["families"]
    assert [family["name"] for family in families] == list(FAMILY_KEYWORDS)
    assert "## mammals" in (sources / "words.txt").read_text(encoding="utf-8")
    assert len(SCRIPT.read_text(encoding="utf-8").splitlines()) < 400


def test_readme_counts_are_current() -> None:
    readme = (BANK_DIR / "README.md").read_text(encoding="utf-8")
    for name in MIN_LINES:
        count = f"{len(_lines(name)):,}"
        assert re.search(rf"`{re.escape(name)}`\s*\|\s*{count}\s*\|", readme), (name, count)
