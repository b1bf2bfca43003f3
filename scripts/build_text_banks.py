"""Build the text banks shipped in ``captum_clipspan/text_banks``.

TextSpan (Gandelsman et al., ICLR 2024, Sec. 4.1) labels each attention head with descriptions
picked from a pool of candidate texts. This script writes that pool and two related lists:

* ``general.txt``   -- short, varied image descriptions ("Photo taken in Paris", "Picture of a dog",
  "An image of wavy texture"), grouped into families (colors, textures, places, art styles, ...).
  Each family combines hand-written category lists with a few phrase patterns and is capped so
  that no family dominates the bank.
* ``words.txt``     -- common concrete English nouns (things a picture can show), one per line.
* ``templates.txt`` -- zero-shot prompt templates with one ``{}`` placeholder.

The hand-written inputs are data files in ``scripts/text_bank_sources/``: ``general.json`` (the
families of ``general.txt``) and ``words.txt`` (nouns by category); ``templates.txt`` is written by
hand in the package and only checked here. The script uses no randomness and no network, so running
it twice gives byte-identical files::

    python scripts/build_text_banks.py            # write into captum_clipspan/text_banks
    python scripts/build_text_banks.py --out DIR  # write somewhere else
    python scripts/build_text_banks.py --check    # exit 1 if the shipped files are stale
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "captum_clipspan" / "text_banks"
SOURCES = Path(__file__).resolve().parent / "text_bank_sources"


# --------------------------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------------------------


# Words whose first letter is a vowel but which are read with a consonant sound ("a uniform").
_A_PREFIXES = ("uni", "use", "usu", "uti", "ukulele", "euro", "one", "once")
# Words whose first letter is a consonant but which are read with a vowel sound ("an hour").
_AN_PREFIXES = ("hour", "honest", "honor", "heir")


# Letters whose spoken name starts with a vowel sound ("an X-ray", "an HDR photo").
_VOWEL_SOUND_LETTERS = "AEFHILMNORSX"


def indefinite(noun: str) -> str:
    """Return ``noun`` with the indefinite article it takes ("a dog", "an owl", "a unicorn")."""
    if re.match(r"[A-Z](?:[A-Z]+\b|-|$)", noun):  # read letter by letter: "an X-ray", "a QR code"
        return f"an {noun}" if noun[0] in _VOWEL_SOUND_LETTERS else f"a {noun}"
    low = noun.lower()
    if low.startswith(_AN_PREFIXES):
        return f"an {noun}"
    if low.startswith(_A_PREFIXES):
        return f"a {noun}"
    return f"an {noun}" if low[:1] in "aeiou" else f"a {noun}"


def pairs(left: Sequence[str], right: Sequence[str], per_right: int, fmt: str) -> tuple[str, ...]:
    """Combine two lists without a full cross product.

    Every item of ``right`` is paired with ``per_right`` items of ``left``, walking through
    ``left`` cyclically so that all of its items get used about equally often.
    """
    out = []
    k = 0
    for r in right:
        for _ in range(per_right):
            out.append(fmt.format(l=left[k % len(left)], r=r))
            k += 1
    return tuple(out)


def capitalize(phrase: str) -> str:
    """Upper-case the first character only (keeps "Paris", "TV" ... intact)."""
    phrase = " ".join(phrase.split())
    return phrase[:1].upper() + phrase[1:]


def check_articles(phrase: str) -> None:
    """Raise ``ValueError`` if ``phrase`` says "a" where "an" is due or the reverse."""
    for match in re.finditer(r"\b([Aa]n?) ([\w'-]+)", phrase):
        expected = indefinite(match.group(2)).split(" ", 1)[0]
        if match.group(1).lower() != expected:
            raise ValueError(f"{phrase!r}: {match.group(0)!r} should use {expected!r}")


# --------------------------------------------------------------------------------------------
# general.txt: families of image descriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Items expanded with a few phrase patterns; ``{x}`` is the item, ``{a}`` the item with
    its indefinite article."""

    items: tuple[str, ...]
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class Family:
    """One family of descriptions: hand-written phrases plus generated ones, at most ``cap``."""

    name: str
    cap: int
    extras: tuple[str, ...] = ()
    groups: tuple[Group, ...] = ()


def _expand(group: Group, budget: int) -> list[str]:
    # Each item gets `per_item` patterns; consecutive items start at different patterns so that
    # every pattern is used about equally often.
    n_pat = len(group.patterns)
    per_item = max(1, min(n_pat, math.ceil(budget / len(group.items))))
    out = []
    for i, item in enumerate(group.items):
        for r in range(per_item):
            pattern = group.patterns[(i + r) % n_pat]
            out.append(pattern.format(x=item, a=indefinite(item)))
    return out


def _dedupe(phrases: Sequence[str], seen: set[str]) -> list[str]:
    out = []
    for phrase in phrases:
        phrase = capitalize(phrase)
        check_articles(phrase)
        key = phrase.casefold()
        if key not in seen:
            seen.add(key)
            out.append(phrase)
    return out


def build_family(family: Family, seen: set[str] | None = None) -> list[str]:
    """Phrases of one family, sorted, without case-insensitive duplicates of ``seen``.

    Hand-written ``extras`` are always kept; generated phrases fill the family up to ``cap`` and,
    when there are more of them, an evenly spaced subset is kept so every item and pattern stays
    represented.
    """
    seen = set() if seen is None else seen
    extras = _dedupe(family.extras, seen)
    if len(extras) > family.cap:
        raise ValueError(f"family {family.name!r} has {len(extras)} extras > cap {family.cap}")
    room = family.cap - len(extras)
    generated: list[str] = []
    if family.groups and room > 0:
        n_items = sum(len(g.items) for g in family.groups)
        for group in family.groups:
            budget = math.ceil(room * len(group.items) / n_items)
            generated.extend(_expand(group, budget))
    local: set[str] = set()
    generated = [p for p in _dedupe(generated, local) if p.casefold() not in seen]
    if len(generated) > room:
        generated = [generated[j * len(generated) // room] for j in range(room)]
    seen.update(p.casefold() for p in generated)
    return sorted(extras + generated, key=lambda p: (p.casefold(), p))


def _items(spec: list[str] | dict, lists: dict[str, list[str]]) -> tuple[str, ...]:
    """A group's items: a list, or ``{"pairs": {left, right, per_right, format}}`` over named
    lists (see :func:`pairs`)."""
    if isinstance(spec, list):
        return tuple(spec)
    combine = spec["pairs"]
    return pairs(lists[combine["left"]], lists[combine["right"]], combine["per_right"],
                 combine["format"])


def load_families(path: Path = SOURCES / "general.json") -> tuple[Family, ...]:
    """The families of ``general.txt``, read from their data file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    lists = data["lists"]
    return tuple(
        Family(family["name"], family["cap"], tuple(family.get("extras", ())),
               tuple(Group(_items(group["items"], lists), tuple(group["patterns"]))
                     for group in family.get("groups", ())))
        for family in data["families"])


FAMILIES: tuple[Family, ...] = load_families()


def build_general_families() -> dict[str, list[str]]:
    """Descriptions of every family, in the fixed family order; no phrase appears twice."""
    seen: set[str] = set()
    return {family.name: build_family(family, seen) for family in FAMILIES}


def build_general() -> list[str]:
    """The lines of ``general.txt``: families in fixed order, sorted within each family."""
    return [phrase for phrases in build_general_families().values() for phrase in phrases]


# --------------------------------------------------------------------------------------------
# words.txt: concrete nouns, grouped by category (each word under exactly one category)
# --------------------------------------------------------------------------------------------


def load_words(path: Path = SOURCES / "words.txt") -> dict[str, list[str]]:
    """Category -> words, from the source file (``## category`` lines start a category)."""
    categories: dict[str, list[str]] = {}
    current = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("## "):
            current = categories.setdefault(line[3:].strip(), [])
        elif line.strip() and not line.startswith("#"):
            if current is None:
                raise ValueError(f"{path}:{number}: words before the first '## category' line")
            current.extend(line.split())
    return categories


def build_words(categories: dict[str, list[str]] | None = None) -> list[str]:
    """The lines of ``words.txt``: every word of ``categories`` (default: the source file),
    sorted.

    Raises ``ValueError`` if a word is not a single lowercase ASCII word or is listed twice,
    so that the hand-written lists stay clean.
    """
    category_of: dict[str, str] = {}
    for category, words in (load_words() if categories is None else categories).items():
        for word in words:
            if not re.fullmatch(r"[a-z]+", word):
                raise ValueError(f"{word!r} in {category!r} is not a single lowercase word")
            if word in category_of:
                raise ValueError(
                    f"{word!r} is listed under both {category_of[word]!r} and {category!r}"
                )
            category_of[word] = category
    return sorted(category_of)


# --------------------------------------------------------------------------------------------
# templates.txt: zero-shot prompt templates (hand-written in the package; checked here)
# --------------------------------------------------------------------------------------------


def build_templates() -> list[str]:
    """The lines of the shipped ``templates.txt``, each checked to hold exactly one ``{}``."""
    templates = (DEFAULT_OUT / "templates.txt").read_text(encoding="utf-8").splitlines()
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
        check_articles(template)
    return templates


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[[], list[str]]] = {
    "general.txt": build_general,
    "words.txt": build_words,
    "templates.txt": build_templates,
}


def render(lines: Sequence[str]) -> str:
    """File contents for ``lines``: one entry per line, '\\n' endings, no blank lines.

    Raises ``ValueError`` on empty, padded, multi-line or case-insensitively repeated entries.
    """
    seen: set[str] = set()
    for line in lines:
        if not line or line != line.strip() or "\n" in line or "  " in line:
            raise ValueError(f"bad bank entry {line!r}")
        if line.casefold() in seen:
            raise ValueError(f"duplicate bank entry {line!r}")
        seen.add(line.casefold())
    return "".join(f"{line}\n" for line in lines)


def build_all() -> dict[str, str]:
    """File name -> file contents, for every bank this script writes."""
    return {name: render(build()) for name, build in BUILDERS.items()}


def write_banks(out_dir: Path) -> dict[str, int]:
    """Write every bank into ``out_dir`` and return the number of lines of each file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, text in build_all().items():
        (out_dir / name).write_bytes(text.encode("utf-8"))
        counts[name] = text.count("\n")
    return counts


def stale_files(out_dir: Path) -> list[str]:
    """Names of the bank files in ``out_dir`` that differ from what this script builds."""
    stale = []
    for name, text in build_all().items():
        path = out_dir / name
        if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files in --out differ"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name}")
        return 1 if stale else 0
    counts = write_banks(args.out)
    for name, count in counts.items():
        print(f"{name}: {count} lines")
    families = build_general_families()
    print("general.txt families: " + ", ".join(f"{k}={len(v)}" for k, v in families.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
