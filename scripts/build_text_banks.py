"""Build the text banks shipped in ``captum_clipspan/text_banks``.

TextSpan (Gandelsman et al., ICLR 2024, Sec. 4.1) labels each attention head with descriptions
picked from a pool of candidate texts. This script writes that pool and two related lists:

* ``general.txt``   -- short, varied image descriptions ("Photo taken in Paris", "Picture of a dog",
  "An image of wavy texture"), grouped into families (colors, textures, places, art styles, ...).
  Each family combines hand-written category lists with a few phrase patterns and is capped so
  that no family dominates the bank.
* ``words.txt``     -- common concrete English nouns (things a picture can show), one per line.
* ``templates.txt`` -- zero-shot prompt templates with one ``{}`` placeholder.

Everything is written by hand below; the script uses no randomness and no network, so running it
twice gives byte-identical files::

    python scripts/build_text_banks.py            # write into captum_clipspan/text_banks
    python scripts/build_text_banks.py --out DIR  # write somewhere else
    python scripts/build_text_banks.py --check    # exit 1 if the shipped files are stale
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "captum_clipspan" / "text_banks"


# --------------------------------------------------------------------------------------------
# Small text helpers
# --------------------------------------------------------------------------------------------


def split_items(text: str) -> tuple[str, ...]:
    """Split a hand-written block on newlines and ';' into stripped, non-empty items."""
    items = (" ".join(part.split()) for line in text.splitlines() for part in line.split(";"))
    return tuple(item for item in items if item)


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


def with_articles(text: str) -> tuple[str, ...]:
    """``split_items`` followed by :func:`indefinite` on every item."""
    return tuple(indefinite(item) for item in split_items(text))


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


NUMBERS_PLURAL = split_items(
    "two; three; four; five; six; seven; eight; nine; ten; eleven; twelve; twenty; a dozen;"
    "a few; several; many; dozens of; hundreds of; a couple of"
)

PLURAL_NOUNS = split_items(
    """dogs; cats; birds; apples; oranges; cars; chairs; books; cups; bottles; flowers; trees;
    coins; balloons; candles; eggs; houses; boats; horses; keys; pencils; stars; ducks; cookies;
    sheep; cows; bananas; lemons; rocks; candies; buttons; glasses of water; pumpkins; bicycles;
    umbrellas; teddy bears; lamps; windows; doors; clocks; fish; shells; leaves; mushrooms;
    plates; spoons; dice; cubes; circles; triangles; hearts; rings; toy cars; wine glasses"""
)

SINGULAR_NOUNS = split_items(
    """dog; cat; bird; apple; car; chair; book; cup; flower; tree; coin; balloon; candle; egg;
    house; boat; horse; key; star; leaf; shoe; lamp; cloud; rock; feather"""
)

COUNT_PEOPLE = split_items(
    "people; children; women; men; friends; students; soldiers; musicians; dancers; tourists;"
    "workers; players; kids; girls; boys"
)

SIZE_ADJECTIVES = split_items(
    """tiny; small; little; miniature; large; big; huge; giant; enormous; massive; oversized;
    gigantic"""
)

SIZE_NOUNS = split_items(
    """dog; house; tree; building; cat; car; statue; boat; rock; flower; cake; bottle; tower;
    bird; bridge; spider; book; sandwich; robot; ship; crystal; teddy bear; pumpkin; door; table;
    mushroom; wave; snake; sculpture; window; lamp; horse; clock; sunflower; cactus"""
)

PHOTO_QUALITIES = split_items(
    """blurry; grainy; sharp; dark; bright; pixelated; vintage; black and white; low-resolution;
    overexposed; underexposed; out-of-focus; high-contrast; faded; noisy; washed-out"""
)

PHOTO_SUBJECTS = split_items(
    """a street; a person; a dog; a building; a car; a cat; a beach; a tree; a room; a face;
    a crowd; a flower; a mountain; a bird; a meal; a house"""
)

VIEWS = split_items(
    """close-up; aerial view; side view; top view; front view; rear view; distant view;
    low-angle shot; high-angle shot; wide shot"""
)

VIEW_SUBJECTS = split_items(
    """a car; a building; a dog; a cat; a horse; a house; a bridge; a ship; a tree; a chair;
    a church; a train; a bicycle; a statue; a table; a person; a lighthouse; a tower; a truck;
    a boat; a castle; an elephant; a sailboat; a motorcycle; a windmill"""
)

FAMILIES: tuple[Family, ...] = (
    Family(
        "colors",
        cap=130,
        extras=split_items(
            """A colorful image; Rainbow colors; Pastel colors; Neon colors; Muted colors;
            Vibrant colors; Earth tones; A monochrome image; Red and white stripes;
            Black and white colors; Blue and yellow colors; Warm colors; Cool colors;
            A gradient of colors; Complementary colors; A single bright color; Faded colors;
            Saturated colors; Dark colors; Light colors; A splash of color;
            An image with many colors; A gray and dull image; Gold and silver colors;
            Image with a red color"""
        ),
        groups=(
            Group(
                split_items(
                    """red; orange; yellow; green; blue; purple; pink; brown; black; white;
                    gray; beige; turquoise; teal; navy blue; maroon; burgundy; crimson; scarlet;
                    magenta; violet; lavender; lilac; indigo; cyan; olive green; lime green;
                    emerald green; mint green; sky blue; royal blue; golden; silver; bronze;
                    copper; cream; ivory; tan; khaki; peach; coral; salmon pink; mustard yellow;
                    ochre; charcoal gray; dark green; light blue; hot pink; rust orange"""
                ),
                (
                    "Image with {a} color",
                    "A photo dominated by {x}",
                    "{x} color",
                    "Something {x}",
                    "An object painted {x}",
                    "{a} background",
                    "Shades of {x}",
                ),
            ),
        ),
    ),
    Family(
        "textures",
        cap=120,
        extras=split_items(
            """Peeling paint; Tree bark texture; A brick wall texture; Wood grain; Animal fur;
            Fish scales; Cracked earth; Rippling water; Knitted wool; Crumpled paper;
            Rusted metal; Sand dunes texture; Frost on a window; Wet pavement;
            Moss-covered stone; Soft fluffy clouds; A rough stone surface; Smooth polished marble;
            An image of wavy texture"""
        ),
        groups=(
            Group(
                split_items(
                    """wavy; rough; smooth; bumpy; fuzzy; furry; grainy; glossy; matte; shiny;
                    scaly; spiky; wrinkled; crumpled; cracked; porous; ribbed; knitted; woven;
                    braided; quilted; pleated; rippled; mottled; speckled; marbled; granular;
                    sandy; rocky; muddy; slimy; sticky; velvety; silky; leathery; feathery;
                    hairy; prickly; jagged; corrugated; honeycomb; fibrous; flaky; powdery;
                    frosty; icy; crystalline; rusty; weathered; polished; metallic; hammered;
                    embossed; engraved; perforated; lumpy; spongy; gritty"""
                ),
                (
                    "An image of {x} texture",
                    "{a} surface",
                    "Close-up of {a} texture",
                    "Something with {a} texture",
                ),
            ),
        ),
    ),
    Family(
        "materials",
        cap=120,
        extras=split_items(
            """A wooden table; A glass bottle; A plastic bag; A metal fence; A stone wall;
            A leather jacket; A woolen sweater; A golden ring; A silver spoon;
            A paper airplane; A cardboard box; A marble statue; A rusty metal door;
            A crystal chandelier; A wicker basket; A concrete building; A brick house;
            A clay pot; A rubber duck; A bamboo fence; A copper kettle; A steel bridge"""
        ),
        groups=(
            Group(
                split_items(
                    """wood; metal; glass; plastic; paper; cardboard; stone; marble; granite;
                    concrete; brick; clay; ceramic; porcelain; steel; iron; copper; brass;
                    bronze; gold; silver; aluminum; tin; leather; wool; cotton; silk; linen;
                    velvet; denim; lace; fur; rubber; foam; wax; ice; sand; straw; bamboo;
                    wicker; cork; crystal; felt; canvas; nylon; plaster; chrome; ivory; slate;
                    terracotta; fabric; yarn; resin; vinyl; chocolate; sugar; feathers"""
                ),
                (
                    "An object made of {x}",
                    "Something made of {x}",
                    "Close-up of {x}",
                    "A sculpture made of {x}",
                    "Made of {x}",
                ),
            ),
        ),
    ),
    Family(
        "shapes_and_patterns",
        cap=110,
        extras=split_items(
            """Round objects; Sharp angles; Curved lines; Straight lines; Parallel lines;
            Concentric circles; A symmetrical image; Wavy lines; Diagonal stripes;
            Horizontal stripes; Vertical stripes; Geometric shapes; Irregular shapes;
            A perfect circle; Triangular shapes; Rectangular objects; A round table;
            A square box; A spiral staircase; A star-shaped object; A heart-shaped balloon;
            A repeating pattern; Scattered dots"""
        ),
        groups=(
            Group(
                split_items(
                    """circle; square; triangle; rectangle; oval; star; heart; diamond; hexagon;
                    pentagon; octagon; spiral; cross; arrow; crescent; cube; sphere; cone;
                    cylinder; pyramid; ring; arch; zigzag; wave; curve; grid; dot"""
                ),
                ("{a} shape", "Something shaped like {a}", "A picture of {a}"),
            ),
            Group(
                split_items(
                    """striped; checkered; polka dot; plaid; floral; geometric; paisley;
                    zebra print; leopard print; camouflage; herringbone; tartan; chevron;
                    houndstooth; argyle; abstract; symmetrical; concentric; diagonal; tiled;
                    honeycomb; wavy"""
                ),
                ("{a} pattern", "Fabric with {a} pattern", "An image with {a} pattern"),
            ),
        ),
    ),
    Family(
        "counts",
        cap=140,
        extras=split_items(
            """Three objects; Two objects; A single object; Many objects; A pair of shoes;
            A pair of gloves; A pair of earrings; A pair of socks; A pair of boots;
            A group of objects; A pile of objects; A row of houses; A stack of books;
            A herd of cows; A flock of birds; A school of fish; A swarm of bees;
            A pack of wolves; A bunch of bananas; A bouquet of flowers; Rows of identical objects;
            Countless tiny dots; Lots of small items; A collection of coins; A stack of plates;
            A heap of stones; A line of cars; Two of everything; An odd number of objects;
            A box full of toys"""
        ),
        groups=(
            Group(
                pairs(NUMBERS_PLURAL, PLURAL_NOUNS, 2, "{l} {r}"),
                ("{x}", "A photo of {x}", "An image showing {x}", "A picture with {x}"),
            ),
            Group(SINGULAR_NOUNS, ("A single {x}", "Only one {x}", "One {x} alone")),
        ),
    ),
    Family(
        "sizes",
        cap=90,
        extras=split_items(
            """Something very small; Something very large; A tiny object; A huge object;
            A close-up of a small object; An object next to a coin for scale;
            A person next to a giant object; A miniature model; A toy version of a car;
            Objects of different sizes; A small thing in a big space; A gigantic structure;
            A microscopic view; A scale model of a city; A tiny insect on a leaf;
            A big dog and a small dog"""
        ),
        groups=(
            Group(
                pairs(SIZE_ADJECTIVES, SIZE_NOUNS, 3, "{l} {r}"),
                ("{a}", "A photo of {a}", "Picture of {a}"),
            ),
        ),
    ),
    Family(
        "cities",
        cap=150,
        extras=("Photo taken in Paris",),
        groups=(
            Group(
                split_items(
                    """Paris; London; New York; Tokyo; Rome; Venice; Barcelona; Madrid; Lisbon;
                    Amsterdam; Berlin; Prague; Vienna; Budapest; Istanbul; Athens; Moscow;
                    Saint Petersburg; Stockholm; Copenhagen; Oslo; Helsinki; Dublin; Edinburgh;
                    Brussels; Zurich; Geneva; Munich; Florence; Milan; Naples; Dubrovnik;
                    Warsaw; Krakow; Cairo; Marrakech; Casablanca; Cape Town; Nairobi; Lagos;
                    Dubai; Jerusalem; Mumbai; Delhi; Kolkata; Bangkok; Singapore; Hong Kong;
                    Shanghai; Beijing; Seoul; Kyoto; Osaka; Taipei; Hanoi; Manila; Jakarta;
                    Kuala Lumpur; Sydney; Melbourne; Auckland; Los Angeles; San Francisco;
                    Chicago; Las Vegas; Miami; New Orleans; Seattle; Boston; Washington;
                    Toronto; Vancouver; Montreal; Mexico City; Havana; Rio de Janeiro;
                    Sao Paulo; Buenos Aires; Lima; Bogota; Santiago; Reykjavik; Kathmandu;
                    Seville; Salzburg"""
                ),
                (
                    "Photo taken in {x}",
                    "A street in {x}",
                    "An image of {x}",
                    "The skyline of {x}",
                    "A famous landmark in {x}",
                    "Tourists in {x}",
                    "A night view of {x}",
                ),
            ),
        ),
    ),
    Family(
        "countries_and_regions",
        cap=150,
        extras=("An image of Japan",),
        groups=(
            Group(
                split_items(
                    """Japan; China; India; France; Italy; Spain; Portugal; Germany; England;
                    Scotland; Ireland; Greece; Turkey; Egypt; Morocco; Kenya; Tanzania;
                    South Africa; Nigeria; Ethiopia; Madagascar; Brazil; Argentina; Peru;
                    Chile; Mexico; Cuba; Canada; the United States; Australia; New Zealand;
                    Iceland; Norway; Sweden; Finland; Denmark; the Netherlands; Switzerland;
                    Austria; Poland; Russia; Ukraine; Croatia; Hungary; the Czech Republic;
                    Romania; Israel; Jordan; Saudi Arabia; Iran; Pakistan; Nepal; Tibet;
                    Thailand; Vietnam; Cambodia; Indonesia; the Philippines; Malaysia;
                    South Korea; Mongolia; Sri Lanka; Bhutan; Colombia; Bolivia; Ecuador;
                    Jamaica; Hawaii; Alaska; Texas; California; Scandinavia; Africa; Europe;
                    Asia; South America; the Middle East; the Caribbean; the Mediterranean;
                    the Alps; the Arctic; Antarctica; Siberia; Patagonia; the Amazon; Tuscany;
                    Provence; Bavaria; Bali; the Australian outback"""
                ),
                (
                    "An image of {x}",
                    "A photo taken in {x}",
                    "A landscape in {x}",
                    "A village in {x}",
                    "Traditional architecture in {x}",
                    "A typical scene from {x}",
                ),
            ),
        ),
    ),
    Family(
        "landscapes",
        cap=130,
        extras=split_items(
            """A panoramic landscape; A scenic view; Nature scenery; An empty landscape;
            Green hills; A wide open plain; A misty valley at dawn; A path through the woods;
            A river winding through a valley; Snow-capped peaks; Waves crashing on rocks;
            A quiet countryside road; Palm trees on a beach; A lake reflecting mountains"""
        ),
        groups=(
            Group(
                split_items(
                    """a mountain; a mountain range; a snowy mountain; a volcano; a valley;
                    a canyon; a cliff; a beach; a sandy beach; a rocky coast; an island;
                    a tropical island; a lake; a mountain lake; a river; a waterfall; a forest;
                    a pine forest; a rainforest; a jungle; a desert; sand dunes; a meadow;
                    a field of wheat; a field of flowers; a grassy hill; rolling hills;
                    a savanna; a swamp; a marsh; a glacier; an iceberg; a frozen lake; a cave;
                    a coral reef; the ocean; a calm sea; a stormy sea; a fjord; a lagoon;
                    an oasis; a prairie; the tundra; a vineyard; rice terraces;
                    the countryside; farmland; an orchard; a bamboo forest; an autumn forest;
                    a riverbank; a gorge; a plateau; a pond; a bay; a harbor; a hot spring;
                    a salt flat; a lavender field; a birch forest; a rocky desert"""
                ),
                (
                    "A photo of {x}",
                    "A view of {x}",
                    "A landscape with {x}",
                    "{x} at sunset",
                    "An aerial view of {x}",
                ),
            ),
        ),
    ),
    Family(
        "weather",
        cap=90,
        extras=split_items(
            """Bright sunny day; Heavy rain; Light rain; Snow falling; A thunderstorm;
            Lightning in the sky; A rainbow after rain; Dark storm clouds; A blizzard;
            A tornado; A hurricane; Hail; Frost on the grass; Fog over a lake;
            Raindrops on a window; A clear blue sky; Fluffy white clouds; A cloudless sky;
            Strong wind blowing trees; Puddles on the street; A sandstorm; A heat wave;
            Snow-covered ground; Icicles hanging from a roof; Dew on leaves; A double rainbow;
            Sun breaking through clouds; A dust storm; Ice on the road;
            People with umbrellas in the rain; Wet streets after rain; Melting snow;
            A partly cloudy sky; Drizzle on a windshield; A flooded street"""
        ),
        groups=(
            Group(
                split_items(
                    """sunny; cloudy; rainy; snowy; foggy; windy; stormy; overcast; hazy; misty;
                    humid; freezing; hot; cold; gray; gloomy; drizzly; icy; clear; wet; dry;
                    chilly; scorching; breezy"""
                ),
                ("{a} day", "{x} weather", "{a} morning"),
            ),
        ),
    ),
    Family(
        "time_of_day_and_seasons",
        cap=90,
        extras=split_items(
            """Autumn leaves; Spring blossoms; A summer day at the beach; A winter wonderland;
            Fall foliage; Christmas time; A starry night; The full moon; A moonlit night;
            A sunset over the ocean; The Milky Way; The first light of day;
            Long shadows in the afternoon; City lights at night; A dark night;
            A sunrise over mountains; Twilight sky"""
        ),
        groups=(
            Group(
                split_items(
                    """at dawn; at sunrise; in the early morning; in the morning; at noon;
                    in the afternoon; at golden hour; at sunset; at dusk; at twilight;
                    in the evening; at night; at midnight; during the blue hour; in spring;
                    in summer; in autumn; in winter"""
                ),
                (
                    "A photo taken {x}",
                    "A city {x}",
                    "A street {x}",
                    "A beach {x}",
                    "A forest {x}",
                    "A quiet village {x}",
                    "The sky {x}",
                    "A lake {x}",
                ),
            ),
        ),
    ),
    Family(
        "lighting",
        cap=90,
        extras=split_items(
            """A backlit subject; A silhouette against the sun; Sunlight through the trees;
            Rays of light; Light through a window; Lens flare; Deep shadows; Strong shadows;
            A dark room; A brightly lit room; Candlelight; Moonlight; Firelight;
            Spotlight on a stage; Street lights at night; Glowing lights;
            Light reflecting on water; A lamp in the dark; Stage lights; Light and shadow;
            A glowing object; Sun glare; Sparkling lights; Christmas lights;
            Car headlights at night; Neon signs glowing; Shadows on a wall"""
        ),
        groups=(
            Group(
                split_items(
                    """soft; harsh; natural; artificial; dim; bright; warm; cold; studio;
                    candle; neon; dramatic; moody; low; high-key; low-key; fluorescent;
                    diffuse; flat; golden; blue; red; colorful; theatrical; overhead; side;
                    rim; fire"""
                ),
                ("{x} lighting", "A photo with {x} lighting", "A scene with {x} light"),
            ),
        ),
    ),
    Family(
        "art_styles",
        cap=140,
        extras=split_items(
            """A stained glass window; A tapestry; An embroidered picture; Graffiti on a wall;
            A tattoo design; A comic strip; Concept art; A cave painting; A religious icon;
            A botanical illustration; A low poly illustration; A mosaic floor;
            A calligraphy scroll; A paper cutout; An abstract painting; A still life painting;
            A portrait painting; A landscape painting; A framed painting in a museum;
            A watercolor painting"""
        ),
        groups=(
            Group(
                with_articles(
                    """oil painting; watercolor painting; acrylic painting; pencil drawing;
                    charcoal drawing; ink drawing; pastel drawing; crayon drawing; sketch;
                    doodle; etching; woodcut; linocut; lithograph; engraving; fresco;
                    collage; mural; cartoon; manga drawing; anime illustration;
                    children's drawing; vector illustration; pixel art image; 3D rendering;
                    digital painting; vintage poster; woodblock print; screen print;
                    chalk drawing; line drawing; storybook illustration"""
                ),
                (
                    "{x}",
                    "{x} of a landscape",
                    "{x} of a person",
                    "{x} of an animal",
                    "{x} of a city",
                    "{x} of flowers",
                    "{x} of a house",
                ),
            ),
            Group(
                with_articles(
                    """bronze sculpture; marble statue; clay figure; ice sculpture;
                    sand sculpture; wooden carving; origami figure; stone carving"""
                ),
                ("{x}", "{x} of a person", "{x} of an animal"),
            ),
            Group(
                split_items(
                    """impressionism; cubism; surrealism; pop art; art nouveau; art deco;
                    baroque art; Renaissance art; romanticism; expressionism; minimalism;
                    abstract expressionism; pointillism; ukiyo-e; gothic art; Byzantine art;
                    fauvism; futurism; realism; photorealism; street art; folk art;
                    medieval art; ancient Egyptian art; Chinese ink painting;
                    Persian miniatures; Aboriginal art; psychedelic art; steampunk;
                    cyberpunk; vaporwave; Bauhaus design; Art Brut; Dutch Golden Age painting;
                    Soviet propaganda posters; Greek vase painting"""
                ),
                (
                    "An image in the style of {x}",
                    "A painting in the style of {x}",
                    "An artwork inspired by {x}",
                ),
            ),
        ),
    ),
    Family(
        "photo_styles",
        cap=120,
        extras=split_items(
            """A black and white photo; A blurry photo; A sepia photo; A grainy photo;
            A pixelated image; A low-resolution photo; A high-resolution photo; A sharp photo;
            An out-of-focus photo; A photo with motion blur; A long-exposure photo;
            A photo with a shallow depth of field; A macro photo; A fisheye photo;
            A panoramic photo; A wide-angle photo; A telephoto shot; A tilt-shift photo;
            A double exposure; An infrared photo; A thermal image; An X-ray image;
            A negative image; A polaroid photo; A vintage photo; An old photograph;
            A faded photo; A scanned photo; A selfie; A snapshot; A professional photo;
            A stock photo; An amateur photo; A studio photo; A product photo; A candid photo;
            A portrait photo; A passport photo; A security camera image; A dashcam image;
            A screenshot; A webcam image; A satellite image; A microscope image;
            A medical scan; An underwater photo; A night vision image;
            A photo taken with a phone; A film photo; A photo with a vignette;
            An overexposed photo; A dark photo; A noisy photo; A photo with JPEG artifacts;
            A cropped photo; A photo with a watermark; A photo with a white border;
            A high-contrast photo; A low-contrast photo; A desaturated photo;
            A photo with a color filter; A retouched photo; An HDR photo; A bokeh photo;
            A photo of a photo; A distorted image; A glitch image; A mirrored image;
            An upside-down photo; A tiny thumbnail image; A collage of photos; A film still;
            A frame from a movie; A frame from a video game; A computer-generated image;
            A wedding photo; A fashion photo; A news photo; A sports photo; A travel photo;
            A wildlife photo; A food photo; A street photo; A documentary photo;
            A family photo; A school photo; A real estate photo; An advertisement photo"""
        ),
        groups=(
            Group(
                pairs(PHOTO_QUALITIES, PHOTO_SUBJECTS, 2, "{l} photo of {r}"),
                ("{a}",),
            ),
        ),
    ),
    Family(
        "viewpoints_and_composition",
        cap=100,
        extras=split_items(
            """An aerial view; A bird's-eye view; A view from above; A view from below;
            A worm's-eye view; A close-up; An extreme close-up; A wide shot; A medium shot;
            A long shot; A side view; A front view; A rear view; A view from behind;
            A top-down view; A low-angle shot; A high-angle shot; An eye-level shot;
            A tilted camera angle; A profile view; A three-quarter view;
            A view through a window; A view through a doorway; A view from a car window;
            A view from an airplane window; A view from a mountain top; A first-person view;
            An over-the-shoulder shot; A reflection in a mirror; A view through a fence;
            A centered composition; An off-center subject; A symmetrical composition;
            A subject in the foreground; A blurred background; A crowded frame;
            Lots of empty space; A zoomed-in view; A view from far away;
            A view from the ground; A drone shot; A view through a keyhole"""
        ),
        groups=(Group(pairs(VIEWS, VIEW_SUBJECTS, 2, "{l} of {r}"), ("{a}",)),),
    ),
    Family(
        "objects",
        cap=160,
        groups=(
            Group(
                with_articles(
                    """chair; table; lamp; clock; book; cup; mug; bottle; vase; mirror; umbrella;
                    key; phone; laptop; computer keyboard; camera; guitar; piano; violin;
                    backpack; suitcase; wallet; wristwatch; candle; basket; bucket; ladder;
                    hammer; broom; pillow; blanket; teapot; kettle; toaster; microwave;
                    refrigerator; television; radio; telephone; typewriter; sewing machine;
                    globe; map; compass; telescope; microscope; lantern; flashlight; balloon;
                    kite; teddy bear; doll; ball; soccer ball; basketball; tennis racket;
                    skateboard; surfboard; helmet; trophy; crown; sword; shield; anchor; rope;
                    chain; padlock; envelope; newspaper; magazine; notebook; pencil; pen;
                    paintbrush; pair of scissors; knife; fork; spoon; plate; bowl; frying pan;
                    cooking pot; wine glass; toothbrush; comb; hair dryer; towel; bathtub;
                    sink; toilet; sofa; bed; desk; bookshelf; wardrobe; door; window; fence;
                    gate; mailbox; fire hydrant; traffic light; street lamp; park bench;
                    trash can; shopping cart; wheelbarrow; watering can; flower pot; birdcage;
                    fish tank; vending machine; washing machine; light bulb; battery;
                    pair of headphones; microphone; loudspeaker; remote control;
                    game controller; drone; robot; coin; banknote; credit card; ticket;
                    gift box; cardboard box; wooden crate; barrel; glass jar; tin can;
                    bar of soap; sponge; pair of glasses; hourglass; chess board; dice;
                    puzzle piece; calculator; stapler; paper clip; screwdriver; wrench;
                    drill; saw; shovel; rake; axe; pair of sunglasses; necklace; ring;
                    trumpet; drum; accordion; harp; typewriter key; sewing needle"""
                ),
                (
                    "Picture of {x}",
                    "A photo of {x}",
                    "An image of {x}",
                    "{x} on a white background",
                    "A close-up of {x}",
                ),
            ),
        ),
    ),
    Family(
        "animals",
        cap=170,
        extras=("Picture of a dog", "A photo of a cat"),
        groups=(
            Group(
                split_items(
                    """dog; puppy; cat; kitten; horse; pony; cow; pig; sheep; goat; chicken;
                    rooster; duck; goose; turkey; rabbit; hamster; guinea pig; mouse; rat;
                    squirrel; chipmunk; hedgehog; fox; wolf; bear; polar bear; panda; koala;
                    kangaroo; lion; tiger; leopard; cheetah; jaguar; elephant; giraffe; zebra;
                    rhinoceros; hippopotamus; camel; llama; alpaca; deer; moose; reindeer;
                    bison; gorilla; chimpanzee; monkey; orangutan; lemur; sloth; raccoon;
                    skunk; otter; beaver; bat; seal; sea lion; walrus; dolphin; whale; shark;
                    octopus; jellyfish; starfish; crab; lobster; goldfish; clownfish; turtle;
                    tortoise; frog; snake; lizard; chameleon; iguana; crocodile; alligator;
                    eagle; hawk; owl; parrot; peacock; flamingo; penguin; swan; pelican;
                    pigeon; sparrow; crow; robin; hummingbird; woodpecker; ostrich; seagull;
                    butterfly; bee; ant; spider; beetle; ladybug; dragonfly; grasshopper;
                    snail; scorpion; caterpillar; golden retriever; German shepherd; poodle;
                    bulldog; husky; dalmatian; tabby cat; black cat; Siamese cat; donkey;
                    buffalo; hyena; meerkat; toucan; tiger cub; lion cub; baby elephant"""
                ),
                (
                    "Picture of {a}",
                    "A photo of {a}",
                    "{a} in the wild",
                    "A sleeping {x}",
                    "A cute {x}",
                    "A drawing of {a}",
                    "A close-up of {a}",
                ),
            ),
        ),
    ),
    Family(
        "food_and_drink",
        cap=150,
        extras=split_items(
            """A plate of food; A delicious meal; A home-cooked meal; Street food; Fast food;
            A dessert; A healthy breakfast; A dinner table; A buffet; A market stall with fruit;
            A kitchen counter with ingredients; Spicy food; Fresh vegetables; Baked goods;
            A fruit bowl; A cheese board; A picnic basket; A food truck; A bakery display;
            Italian food; Japanese food; Mexican food; Indian food; Chinese food; Thai food;
            French pastries; Breakfast in bed; A steaming bowl of soup;
            A melting ice cream cone; A burnt piece of toast"""
        ),
        groups=(
            Group(
                split_items(
                    """a pizza; a hamburger; a hot dog; a sandwich; a taco; a burrito; sushi;
                    ramen; spaghetti; pasta; a salad; soup; a steak; fried chicken;
                    French fries; rice; fried rice; curry; dumplings; noodles;
                    a bowl of cereal; pancakes; waffles; an omelet; scrambled eggs; toast;
                    a croissant; a bagel; bread; a baguette; cheese; a cake; a birthday cake;
                    cupcakes; cookies; doughnuts; ice cream; chocolate; candy; an apple pie;
                    fruit salad; apples; bananas; oranges; strawberries; grapes;
                    a watermelon; a pineapple; lemons; cherries; blueberries; carrots;
                    tomatoes; broccoli; potatoes; corn on the cob; mushrooms; peppers;
                    onions; a cup of coffee; a cup of tea; a glass of wine; a glass of beer;
                    a glass of milk; orange juice; a cocktail; a smoothie; lemonade;
                    a bottle of water; seafood; grilled fish; shrimp; kebabs; dim sum;
                    a bento box; a popsicle; popcorn; nachos; a pretzel; honey; jam;
                    a full English breakfast; a roast chicken; a bowl of oatmeal;
                    a slice of cheesecake; macarons; a chocolate bar; a lollipop; tacos;
                    a pot of stew; a hot chocolate; a milkshake; a cheeseburger"""
                ),
                (
                    "A photo of {x}",
                    "Close-up of {x}",
                    "{x} on a table",
                    "A picture of {x}",
                ),
            ),
        ),
    ),
    Family(
        "vehicles",
        cap=130,
        extras=split_items(
            """A traffic jam; A parking lot full of cars; A busy highway; A car crash;
            A car dealership; A gas station; A train station; An airport runway;
            A harbor full of boats; A bicycle lane; A flat tire; A steering wheel;
            A car interior; A dashboard; A license plate; A road trip; A rusty old car"""
        ),
        groups=(
            Group(
                split_items(
                    """car; sports car; race car; vintage car; taxi; bus; double-decker bus;
                    school bus; truck; fire truck; ambulance; police car; tractor; motorcycle;
                    scooter; bicycle; tricycle; train; steam train; subway train; tram;
                    cable car; airplane; jet; helicopter; hot air balloon; rocket;
                    space shuttle; sailboat; yacht; canoe; kayak; rowboat; ship; cruise ship;
                    cargo ship; ferry; submarine; gondola; horse-drawn carriage; wagon; van;
                    camper van; limousine; jeep; pickup truck; bulldozer; excavator;
                    forklift; tank; snowmobile; sled; golf cart; rickshaw; go-kart;
                    monster truck; fishing boat; speedboat; tugboat; glider; blimp;
                    spaceship; electric scooter; delivery truck"""
                ),
                (
                    "Picture of {a}",
                    "A photo of {a}",
                    "{a} in motion",
                    "An old {x}",
                    "A toy {x}",
                    "A red {x}",
                    "{a} at night",
                ),
            ),
        ),
    ),
    Family(
        "plants",
        cap=110,
        extras=split_items(
            """A field of sunflowers; A tulip field; A rice field; Tall grass; Wildflowers;
            A flower bed; A bouquet of roses; A potted cactus on a windowsill;
            Fallen leaves on the ground; Tree roots; A garden in bloom; Overgrown weeds"""
        ),
        groups=(
            Group(
                with_articles(
                    """rose; sunflower; tulip; daisy; lily; orchid; lotus flower;
                    cherry blossom; dandelion; poppy; lavender plant; cactus; succulent;
                    palm tree; pine tree; oak tree; maple tree; willow tree; birch tree;
                    bonsai tree; bamboo plant; fern; ivy plant; moss patch; mushroom; vine;
                    bush; hedge; potted plant; houseplant; fallen leaf; green leaf;
                    pine cone; acorn; seedling; tree stump; water lily; Christmas tree;
                    weeping willow; baobab tree; redwood tree; apple tree; lemon tree;
                    hydrangea; carnation; magnolia; thistle; clover; four-leaf clover;
                    sprout; flower bud; rose petal; dried flower; fruit tree"""
                ),
                (
                    "A photo of {x}",
                    "Picture of {x}",
                    "Close-up of {x}",
                    "{x} in a garden",
                    "A drawing of {x}",
                ),
            ),
        ),
    ),
    Family(
        "buildings_and_architecture",
        cap=130,
        extras=split_items(
            """Gothic architecture; Modern architecture; Brutalist architecture;
            Colonial architecture; A city skyline; A brick wall; A wooden door; A red door;
            A balcony with flowers; A tiled roof; A glass facade; An abandoned building;
            A construction site; Scaffolding on a building; A suburban street;
            A narrow alley; A cobblestone street; A town square; A medieval village;
            Ancient ruins; A row of colorful houses"""
        ),
        groups=(
            Group(
                split_items(
                    """house; cottage; cabin; mansion; castle; palace; church; cathedral;
                    mosque; temple; pagoda; synagogue; skyscraper; office building;
                    apartment building; tower; lighthouse; windmill; barn; farmhouse; bridge;
                    stadium; museum; library; school; hospital; train station;
                    airport terminal; shopping mall; supermarket; restaurant; cafe; bakery;
                    hotel; factory; warehouse; fire station; police station; post office;
                    bank; prison; fort; pyramid; igloo; hut; treehouse; greenhouse; gazebo;
                    log cabin; townhouse; bungalow; villa; monastery; monument; fountain;
                    clock tower; water tower; chapel; amphitheater; city hall"""
                ),
                (
                    "A photo of {a}",
                    "The facade of {a}",
                    "An old {x}",
                    "A modern {x}",
                    "{a} at night",
                    "The entrance of {a}",
                ),
            ),
        ),
    ),
    Family(
        "indoor_scenes",
        cap=100,
        groups=(
            Group(
                split_items(
                    """kitchen; living room; bedroom; bathroom; dining room; office; classroom;
                    library; hallway; attic; basement; garage; laboratory; hospital room; gym;
                    restaurant; cafe; bar; supermarket aisle; shopping mall; museum hall;
                    art gallery; theater; cinema; concert hall; church hall;
                    airport lounge; train station hall; subway station; hotel room;
                    waiting room; conference room; factory floor; warehouse; workshop;
                    photo studio; barbershop; hair salon; bakery; kindergarten; nursery;
                    prison cell; elevator; locker room; laundry room; home office;
                    server room; playroom; bookstore; pharmacy"""
                ),
                (
                    "A photo of {a}",
                    "Inside {a}",
                    "An empty {x}",
                    "A messy {x}",
                    "A cozy {x}",
                    "A modern {x}",
                ),
            ),
        ),
    ),
    Family(
        "people_and_ages",
        cap=130,
        groups=(
            Group(
                split_items(
                    """baby; toddler; little girl; little boy; child; teenager; teenage girl;
                    teenage boy; young woman; young man; woman; man; middle-aged man;
                    middle-aged woman; old man; old woman; elderly couple; grandmother;
                    grandfather; family; couple; bride; groom; student; schoolgirl;
                    schoolboy; person; newborn baby; mother and child; father and son"""
                ),
                (
                    "A photo of {a}",
                    "A portrait of {a}",
                    "{a} smiling",
                    "{a} outdoors",
                    "{a} looking at the camera",
                ),
            ),
            Group(
                split_items(
                    """long hair; short hair; curly hair; blond hair; red hair; gray hair;
                    a beard; a mustache; glasses; freckles; tattoos; a bald head; braids;
                    dreadlocks; a ponytail; a big smile; blue eyes; a bun; wrinkles;
                    a shaved head; wet hair; messy hair"""
                ),
                ("A person with {x}", "Someone with {x}", "A portrait of a person with {x}"),
            ),
        ),
    ),
    Family(
        "people_activities",
        cap=150,
        groups=(
            Group(
                split_items(
                    """running; walking; jogging; swimming; dancing; singing; playing guitar;
                    playing piano; reading a book; writing a letter; cooking; eating;
                    drinking coffee; sleeping; sitting on a bench; standing in line;
                    riding a bike; riding a horse; driving a car; surfing; skiing;
                    snowboarding; skateboarding; climbing a mountain; hiking; fishing;
                    camping; gardening; painting a picture; taking a photo;
                    talking on the phone; using a laptop; typing; laughing; crying;
                    shouting; hugging; shaking hands; waving; jumping; stretching;
                    doing yoga; lifting weights; playing soccer; playing basketball;
                    playing tennis; playing chess; playing video games; shopping; working;
                    studying; teaching; giving a speech; praying; meditating; cleaning;
                    washing dishes; doing laundry; walking a dog; feeding birds;
                    pushing a stroller; carrying a box; holding an umbrella; holding a baby;
                    brushing teeth; getting a haircut; taking a selfie; watching TV;
                    celebrating; clapping; boxing; rowing a boat; diving; sunbathing;
                    building a sandcastle; flying a kite; having a picnic; sitting at a desk;
                    waiting for a bus; crossing the street; looking out a window;
                    lying on the grass; blowing out candles; playing drums; knitting;
                    sewing; fixing a car; sweeping the floor"""
                ),
                (
                    "A person {x}",
                    "A man {x}",
                    "A woman {x}",
                    "A child {x}",
                    "People {x}",
                    "A girl {x}",
                    "A boy {x}",
                    "An old man {x}",
                ),
            ),
        ),
    ),
    Family(
        "clothing",
        cap=140,
        extras=split_items(
            """Formal clothing; Casual clothing; Winter clothes; Summer clothes; Sportswear;
            A fashion show; Clothes on a hanger; A pile of clothes; A clothing store;
            Folded clothes; Vintage clothing; A closet full of clothes; A pair of jeans"""
        ),
        groups=(
            Group(
                split_items(
                    """a red dress; a wedding dress; a suit and tie; a tuxedo; a leather jacket;
                    a denim jacket; a winter coat; a raincoat; a hoodie; a sweater; a T-shirt;
                    jeans; shorts; a skirt; a swimsuit; a bikini; a uniform; a school uniform;
                    a police uniform; a military uniform; a lab coat; a kimono; a sari;
                    a kilt; a hat; a cowboy hat; a baseball cap; a beanie; a top hat;
                    a helmet; a crown; a scarf; gloves; sunglasses; glasses; a mask;
                    a face mask; a costume; a Halloween costume; pajamas; a bathrobe;
                    sneakers; boots; high heels; sandals; a backpack; a necklace; earrings;
                    a watch; a tie; a bow tie; a veil; a turban; a hijab;
                    traditional clothing; a traditional dress; a sports jersey; a wetsuit;
                    a spacesuit; armor; a cape; a ball gown; a vest; overalls; a tank top;
                    a trench coat; a fur coat; a straw hat; rain boots; an apron;
                    a chef's hat; a graduation gown; a party dress; a plaid shirt;
                    a striped shirt; a floral dress; a wool sweater"""
                ),
                (
                    "A person wearing {x}",
                    "A child wearing {x}",
                    "A model wearing {x}",
                    "A mannequin wearing {x}",
                    "A photo of {x}",
                ),
            ),
        ),
    ),
    Family(
        "professions",
        cap=120,
        groups=(
            Group(
                split_items(
                    """doctor; nurse; surgeon; dentist; chef; baker; waiter; farmer; fisherman;
                    firefighter; police officer; soldier; sailor; pilot; astronaut;
                    scientist; teacher; artist; painter; musician; singer; dancer;
                    photographer; construction worker; mechanic; carpenter; plumber;
                    electrician; engineer; programmer; businessman; businesswoman; lawyer;
                    judge; priest; monk; nun; athlete; football player; basketball player;
                    tennis player; boxer; cyclist; jockey; cowboy; clown; magician; juggler;
                    barber; hairdresser; librarian; cashier; mail carrier; delivery driver;
                    taxi driver; bus driver; lifeguard; gardener; janitor; security guard;
                    tour guide; news anchor; reporter; fashion model; actor; king; queen;
                    knight; pirate; blacksmith; shepherd"""
                ),
                ("A photo of {a}", "{a} at work", "A portrait of {a}", "A smiling {x}"),
            ),
        ),
    ),
    Family(
        "numbers_of_people",
        cap=90,
        extras=split_items(
            """An image with no people; An empty room with no people; An empty street;
            A photo of one person; A single person alone; A person standing alone in a field;
            Two people; Two people talking; A couple holding hands; Three people;
            Three friends; Four people; A family of four; Five people;
            A small group of people; A large group of people; A crowd of people;
            A huge crowd at a concert; A packed stadium; A busy street full of people;
            A queue of people; A team photo; A class photo; A group selfie;
            A big family dinner; A wedding party; An audience in a theater;
            Protesters in the street; Tourists taking photos; Commuters on a train;
            People at a market; People on a beach; Children playing together;
            Friends at a party; Colleagues in a meeting; A band on stage; A choir singing;
            Dancers on a stage; Runners in a marathon; Spectators watching a game;
            A lonely figure in the distance; Silhouettes of people; Shadows of people;
            A person seen from behind; A mother and her children; A pair of twins;
            A crowd seen from above"""
        ),
        groups=(
            Group(
                pairs(NUMBERS_PLURAL, COUNT_PEOPLE, 2, "{l} {r}"),
                ("{x}", "A photo of {x}", "{x} standing together"),
            ),
        ),
    ),
    Family(
        "emotions_and_moods",
        cap=130,
        extras=split_items(
            """A feeling of joy; A feeling of loneliness; Tears on a face; A big smile;
            A frown; People laughing together; A scream; A sense of danger;
            Celebration and joy; A grieving person; Fear in the dark; A warm hug;
            A peaceful moment; Excitement at a concert; A tense moment; Sadness in the rain;
            A romantic dinner; An angry crowd"""
        ),
        groups=(
            Group(
                split_items(
                    """happy; sad; angry; surprised; scared; disgusted; confused; bored; tired;
                    excited; calm; worried; nervous; proud; shy; lonely; joyful; thoughtful;
                    serious; playful; relaxed; anxious; grumpy; cheerful; curious;
                    embarrassed; shocked; hopeful; determined; sleepy; amused; annoyed;
                    delighted; frustrated; focused; content"""
                ),
                (
                    "{a} person",
                    "{a} face",
                    "{a} child",
                    "{a} dog",
                    "{a} expression",
                ),
            ),
            Group(
                split_items(
                    """peaceful; romantic; mysterious; eerie; creepy; spooky; gloomy;
                    melancholic; nostalgic; dreamy; cozy; festive; chaotic; tense; serene;
                    whimsical; magical; ominous; lively; somber; dramatic; tranquil; dark;
                    uplifting; epic; haunting; energetic"""
                ),
                ("{a} atmosphere", "{a} mood", "{a} scene"),
            ),
        ),
    ),
    Family(
        "text_in_images",
        cap=130,
        extras=split_items(
            """A sign with text; A street sign; A road sign; A stop sign; A neon sign;
            A shop sign; A billboard; A poster with text; Printed text; Handwritten text;
            A handwritten note; A letter; A newspaper page; A page of a book; A menu;
            A receipt; A label on a bottle; A license plate with numbers; A logo;
            A brand logo; Graffiti text; Chinese characters; Japanese writing;
            Arabic script; Cyrillic letters; Latin text; Greek letters; Hebrew letters;
            Korean writing; Hindi text; Numbers on a clock; A calendar page;
            A chalkboard with writing; A whiteboard with equations; A math equation;
            A spreadsheet; A screenshot of a website; A text message; Subtitles on a screen;
            A quote on a poster; A movie poster; A book cover; An album cover;
            A magazine cover; A product label; A barcode; A QR code; A watermark;
            A name tag; A price tag; A scoreboard; A keyboard with letters;
            Alphabet letters; The letter A; The letter X; The number 7; The number 100;
            The year 1999; Digits on a display; A digital clock; A typewritten page;
            Calligraphy; A signature; A map with labels; A diagram with labels;
            A warning sign; An exit sign; A speed limit sign; A sign in a foreign language;
            Text on a screen; Words on a banner; A protest sign; A birthday card;
            A page full of numbers; Large bold letters; Tiny print;
            An image with the word 'stop'"""
        ),
        groups=(
            Group(
                split_items(
                    """stop; open; closed; exit; sale; love; hello; welcome; danger; caution;
                    hope; peace; free; help; no parking; one way; entrance; coffee; pizza;
                    hotel; taxi; police; school; home; happy birthday; keep out; push; pull;
                    fire; sold; yes; no; dream; thank you; news; bakery; enjoy; wow"""
                ),
                (
                    "An image with the word '{x}'",
                    "A sign that says '{x}'",
                    "The word '{x}' written on a wall",
                    "The word '{x}' in large letters",
                    "A T-shirt with the word '{x}'",
                ),
            ),
        ),
    ),
    Family(
        "sports_and_events",
        cap=130,
        extras=split_items(
            """A birthday party; A wedding; A wedding ceremony; A graduation ceremony;
            A concert; A music festival; A parade; A carnival; A fireworks display;
            A Christmas market; Christmas decorations; A Halloween party;
            Chinese New Year celebrations; A Diwali celebration; A street festival;
            A protest march; A political rally; A funeral; A business meeting;
            A press conference; A classroom lesson; A lecture; A medal ceremony;
            A picnic in the park; A barbecue party; A family reunion; A dinner party;
            A baby shower; A circus performance; A magic show; A theater play;
            A ballet performance; A rock concert; An art exhibition; A trade fair;
            A farmers market; A car show; A dog show; A rodeo; A camping trip;
            A beach party; New Year's Eve fireworks; An Easter egg hunt; A tea party;
            A soccer stadium; A finish line; A boxing ring; A tennis court; A golf course;
            A basketball court; A swimming pool; A ski slope; A race track"""
        ),
        groups=(
            Group(
                split_items(
                    """soccer; American football; basketball; baseball; tennis; golf;
                    ice hockey; volleyball; rugby; cricket; boxing; wrestling; swimming;
                    surfing; skiing; snowboarding; skateboarding; cycling; horse racing;
                    car racing; sailing; rowing; fencing; gymnastics; figure skating;
                    karate; judo; archery; bowling; table tennis; badminton; rock climbing;
                    running; diving; weightlifting; water polo; motocross; sumo wrestling"""
                ),
                ("A photo of {x}", "{a} competition", "{x} equipment"),
            ),
        ),
    ),
    Family(
        "body_parts",
        cap=80,
        extras=split_items(
            """A handshake; Hands holding something; A finger pointing; A thumbs up;
            A peace sign made with fingers; Bare feet on sand; A footprint in the sand;
            A fingerprint; A hand waving; An X-ray of a hand; Painted fingernails;
            A tattooed arm; Muddy boots and feet"""
        ),
        groups=(
            Group(
                split_items(
                    """a hand; a face; an eye; eyes; a nose; a mouth; lips; an ear; hair;
                    a foot; feet; fingers; a fist; an arm; a leg; a knee; teeth; a tongue;
                    a beard; a skeleton; a skull; a brain; wrinkled hands; a baby's hand;
                    a paw; a bird's wing; a cat's eye; a horse's mane; an elephant's trunk;
                    a fish fin; feathers; a dog's nose; a human heart; a shoulder; a neck"""
                ),
                ("A close-up of {x}", "A photo of {x}", "A drawing of {x}"),
            ),
        ),
    ),
    Family(
        "symbols_and_diagrams",
        cap=90,
        extras=split_items(
            """A map; A world map; A street map; A chart; A bar chart; A pie chart;
            A line graph; A diagram; A flowchart; A blueprint; An infographic;
            A scientific diagram; An anatomy illustration; A technical drawing; A floor plan;
            A flag; A national flag; A pirate flag; An icon; An emoji; A smiley face;
            A heart symbol; A peace symbol; A yin yang symbol; A recycling symbol;
            A dollar sign; A question mark; An exclamation mark; An arrow pointing right;
            A checkmark; A skull and crossbones; A warning triangle; A coat of arms;
            A cartoon character; A meme; A comic panel; A playing card; Sheet music;
            Musical notes; A clock face; A compass rose; A periodic table; A user interface;
            A mobile app screen; A video game screen; A pixel art sprite;
            An error message on a screen; A computer desktop; A crossword puzzle"""
        ),
        groups=(
            Group(
                split_items(
                    """Japan; the United States; France; Germany; Italy; Canada; Brazil; China;
                    India; the United Kingdom; Mexico; South Korea; Spain; Sweden; Greece;
                    Turkey; Israel; Australia; Argentina; South Africa; Ukraine; Kenya;
                    Norway; Jamaica; Nepal"""
                ),
                ("The flag of {x}", "A waving flag of {x}"),
            ),
        ),
    ),
    Family(
        "space_and_sky",
        cap=40,
        extras=split_items(
            """The moon; A crescent moon; The night sky; Stars in the sky; A galaxy; A nebula;
            Planet Earth from space; Saturn's rings; An astronaut in space; A rocket launch;
            A satellite in orbit; The sun; A solar eclipse; A comet; A meteor shower;
            The surface of Mars; A telescope image of space; The northern lights;
            A spiral galaxy; A star cluster; The space station; Craters on the moon;
            A planet with rings; A shooting star; The Earth at night from space;
            An alien landscape; A spacewalk; A black hole illustration"""
        ),
    ),
)


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

WORDS: dict[str, str] = {
    "mammals": """
        aardvark alpaca anteater antelope armadillo baboon badger bat bear beaver beagle beluga
        bison boar bobcat buffalo bull bulldog bunny calf camel capybara caribou cat cattle
        cheetah chihuahua chimpanzee chinchilla chipmunk collie corgi cougar cow coyote cub
        dachshund dalmatian deer dingo dog dolphin donkey dromedary elephant elk ermine ewe fawn
        ferret foal fox gazelle gerbil gibbon giraffe goat gopher gorilla greyhound hamster hare
        hedgehog heifer hippopotamus hog horse hound husky hyena ibex impala jackal jaguar
        kangaroo kitten koala lamb lemming lemur leopard lion llama lynx manatee mare marmot
        mastiff meerkat mink mole mongoose monkey moose mouse mule muskrat mustang narwhal ocelot
        okapi opossum orangutan orca otter ox panda panther pig piglet platypus pony poodle
        porcupine porpoise puma pug puppy rabbit raccoon ram rat reindeer retriever rhinoceros
        rottweiler seal sheep sheepdog shrew skunk sloth spaniel squirrel stag stallion stoat
        tapir terrier tiger vole walrus warthog weasel whale wildebeest wolf wolverine wombat yak
        zebra
    """,
    "birds": """
        albatross bird blackbird bluebird budgie buzzard canary cardinal chick chickadee chicken
        cockatiel cockatoo condor cormorant crane crow cuckoo dodo dove duck duckling eagle egret
        emu falcon finch flamingo goldfinch goose gosling grouse gull hawk hen heron hornbill
        hummingbird ibis jay kingfisher kookaburra lark lovebird macaw magpie mallard
        mockingbird nightingale oriole osprey ostrich owl parakeet parrot partridge peacock
        pelican penguin pheasant pigeon puffin quail raven roadrunner robin rooster sandpiper
        seagull sparrow starling stork swallow swan tern thrush toucan turkey vulture warbler
        woodpecker wren
    """,
    "reptiles_and_amphibians": """
        alligator anaconda bullfrog chameleon cobra crocodile dinosaur frog gecko iguana lizard
        newt python rattlesnake salamander snake tadpole toad tortoise turtle viper
    """,
    "sea_life": """
        anchovy anemone barnacle barracuda carp catfish clam clownfish cod conch coral crab
        crayfish cuttlefish eel fish flounder goldfish guppy haddock halibut herring jellyfish
        koi lobster mackerel marlin minnow mussel octopus oyster perch pike piranha prawn
        pufferfish salmon sardine scallop seahorse seashell shark shrimp squid starfish stingray
        sturgeon swordfish tilapia trout tuna urchin
    """,
    "insects_and_small_creatures": """
        ant aphid bee beehive beetle bumblebee butterfly caterpillar centipede cicada cobweb
        cockroach cocoon cricket dragonfly earthworm firefly flea fly gnat grasshopper hornet
        housefly ladybug larva leech locust maggot mantis millipede mosquito moth scorpion
        silkworm slug snail spider tarantula termite tick wasp weevil worm
    """,
    "fruits": """
        apple apricot avocado banana blackberry blueberry cantaloupe cherry clementine coconut
        cranberry currant elderberry fig gooseberry grape grapefruit guava kiwi kumquat lemon
        lime lychee mango melon mulberry nectarine orange papaya peach pear persimmon pineapple
        plantain plum pomegranate prune quince raisin raspberry strawberry tangerine watermelon
    """,
    "vegetables": """
        artichoke arugula asparagus bean beet beetroot broccoli cabbage carrot cauliflower
        celery chickpea chili corn cucumber eggplant garlic ginger gourd horseradish jalapeno
        kale leek lentil lettuce mushroom okra olive onion parsnip pea pepper potato pumpkin
        radish rhubarb scallion shallot soybean spinach squash tomato truffle turnip watercress
        yam zucchini
    """,
    "nuts_herbs_and_spices": """
        almond basil cashew chestnut cilantro cinnamon clove cumin dill hazelnut macadamia mint
        nutmeg oregano paprika parsley peanut pecan peppercorn pistachio rosemary saffron sesame
        thyme vanilla walnut
    """,
    "dishes_and_baked_goods": """
        bagel baguette biscuit bread brioche brownie bun burger burrito cake candy caramel
        casserole cereal cheeseburger cheesecake chocolate chowder churro cookie cracker crepe
        croissant cupcake curry custard dough doughnut dumpling eclair enchilada falafel
        flatbread fondue frosting fudge gingerbread goulash granola gumbo hamburger hummus icing
        kebab lasagna lollipop macaroni marshmallow meatball meringue muffin naan nachos noodle
        oatmeal omelet paella pancake pasta pastry pie pita pizza popcorn popsicle porridge
        pretzel pudding quiche ramen rice risotto salad samosa sandwich sashimi sausage scone
        sorbet soup spaghetti steak stew sundae sushi taco tamale tart tempura toast toffee
        tortilla waffle wonton
    """,
    "dairy_meat_and_pantry": """
        bacon beef broth butter caviar cheddar cheese cream egg gravy guacamole ham honey jam
        jelly jerky ketchup mayonnaise milk mozzarella mustard mutton parmesan pepperoni pesto
        pickle pork salami salsa salt sauce sugar syrup tofu veal venison vinegar yogurt flour
    """,
    "drinks": """
        beer brandy cappuccino champagne cider cocktail cocoa coffee cola espresso juice latte
        lemonade milkshake rum smoothie soda tea tequila vodka water whiskey wine
    """,
    "clothing": """
        apron balaclava bandana bathrobe beanie belt beret bikini blazer blouse bonnet boot
        button cap cape cardigan cloak clog coat collar corset dress earmuffs fedora glove gown
        handkerchief hat headband helmet hijab hood hoodie jacket jeans jersey jumpsuit kilt
        kimono leggings leotard loafer mitten moccasin necktie nightgown overalls overcoat
        pajamas parka pocket poncho raincoat robe sandal sari sarong scarf shawl shirt shoe
        shorts skirt sleeve slipper sneaker sock sombrero stiletto stocking suit suspenders
        sweater sweatshirt swimsuit tie tights toga tracksuit trousers tunic turban tuxedo
        underwear uniform veil vest visor wetsuit wig windbreaker zipper
    """,
    "accessories_and_jewelry": """
        amethyst amulet anklet backpack bead bracelet brooch crown cufflink diamond earring
        emerald eyeglasses gem goggles handbag jade jewel keychain lanyard locket mask medallion
        monocle necklace opal parasol pearl pendant purse ring ruby sapphire satchel sunglasses
        tiara topaz umbrella wallet watch wristwatch
    """,
    "body": """
        ankle arm armpit beard belly bone braid brain cheek chest chin dimple ear elbow eye
        eyeball eyebrow eyelash eyelid face finger fingernail fist foot forearm forehead freckle
        hair hand head heart heel hip jaw kidney knee knuckle leg lip liver lung mouth muscle
        mustache navel neck nose nostril palm pelvis ponytail rib scalp scar shin shoulder
        skeleton skin skull spine stomach tattoo teeth thigh thumb toe toenail tongue tooth
        torso waist wrinkle wrist
    """,
    "animal_parts": """
        antler beak claw eggshell fang feather fin flipper fur gill hoof horn hump mane nest paw
        pelt pincer plumage quill shell snout tail talon tentacle trunk tusk udder whisker wing
    """,
    "furniture_and_home": """
        armchair banister basket bathtub beanbag bed bedspread bench bib bin blanket bookcase
        bookshelf broom bucket cabinet candle candlestick carpet chair chandelier closet clock
        comb couch cradle crib cupboard curtain cushion deodorant desk detergent diaper doorbell
        doorknob doormat drawer dresser dumpster dustpan duvet fan faucet fireplace footstool
        frame futon hairbrush hamper hammock handrail hanger headboard heater highchair
        humidifier key keyhole lamp lampshade lantern lock lotion loveseat mailbox mattress
        mirror mop nightstand ornament ottoman pacifier padlock pillow quilt radiator razor
        recliner rug shampoo shelf shower shutter sideboard sink soap sofa sponge stool stroller
        table throne tissue toilet toothbrush toothpaste towel vase wallpaper wardrobe
        washcloth wastebasket windowsill
    """,
    "kitchen": """
        barbecue blender bottle bowl canister carafe cauldron chopsticks cleaver coaster
        colander cookbook cooler corkscrew countertop cup cutlery decanter dishwasher dispenser
        fork freezer fridge funnel goblet grater griddle grill jar jug kettle knife ladle lid
        lunchbox microwave mixer mug napkin oven pan peeler pestle pitcher placemat plate
        platter pot ramekin refrigerator saucepan saucer sieve skewer skillet spatula spoon
        stove strainer tablecloth tablespoon teacup teapot teaspoon thermos toaster toothpick
        tongs tray tumbler utensil whisk wok wrapper
    """,
    "tools_and_hardware": """
        anvil axe axle battery blowtorch bolt chain chainsaw chisel clamp cog compass crowbar
        drill flashlight gear generator glue hacksaw hammer hatchet hinge hoe hook hose
        jackhammer knob ladder latch lawnmower lever magnet mallet mousetrap nail needle nozzle
        nut pallet pickaxe pitchfork pliers plow plunger pulley pump rake rivet rope ruler
        sandpaper saw sawhorse scaffold scissors screw screwdriver scythe shears shovel sickle
        sledgehammer spade spool sprinkler stapler tape thimble thread toolbox tripod trowel
        tweezers valve vise washer wheelbarrow wire workbench wrench yarn
    """,
    "office_and_school": """
        atlas binder blackboard book bookend bookmark briefcase brochure calculator calendar
        certificate chalk chalkboard clipboard corkboard crayon diary dictionary diploma easel
        encyclopedia envelope eraser folder globe highlighter ink inkwell journal label lectern
        locker magazine manuscript map marker newspaper notebook notepad pamphlet paperclip
        parchment passport pen pencil postcard poster protractor pushpin receipt scroll
        sharpener stamp sticker textbook thumbtack ticket typewriter whiteboard badge
    """,
    "electronics": """
        adapter amplifier antenna barometer cable camcorder camera cassette charger computer
        console disc drone earphones gramophone headphones headset joystick jukebox keyboard
        keypad laptop lens lightbulb microchip microphone modem monitor motherboard phone
        photocopier plug printer projector radar radio robot router satellite scanner
        screen smartphone socket speaker speedometer stereo tablet telephone television
        thermostat timer touchscreen turntable webcam hairdryer
    """,
    "medical_and_science": """
        bandage beaker binoculars capsule crutch dentures dropper flask gauze gurney inhaler
        magnifier microscope ointment pill pipette prism scalpel splint stethoscope stretcher
        syringe telescope thermometer vial wheelchair
    """,
    "musical_instruments": """
        accordion bagpipes banjo bassoon bell bongo bugle castanets cello chime clarinet cymbal
        didgeridoo drum drumstick fiddle flute glockenspiel gong guitar harmonica harp
        harpsichord kazoo lute lyre mandolin maraca marimba metronome oboe ocarina organ piano
        piccolo saxophone sitar synthesizer tambourine triangle trombone trumpet tuba ukulele
        viola violin xylophone
    """,
    "toys_and_games": """
        ball balloon boomerang chessboard dice dart dartboard doll dollhouse dominoes frisbee
        jigsaw kite marionette pawn pinwheel puppet puzzle rattle sandbox sandcastle
        scarecrow seesaw snowball snowman swing toy trampoline
    """,
    "sports_gear": """
        barbell baseball basketball baton bridle dumbbell football goalpost harness hoop
        horseshoe hurdle javelin kettlebell kneepad lasso leash medal net paddle puck racket
        saddle scoreboard shuttlecock skate ski sled snorkel snowboard stirrup stopwatch
        surfboard treadmill trophy volleyball whistle skateboard
    """,
    "weapons_and_armor": """
        armor arrow bullet cannon cannonball catapult chainmail crossbow dagger harpoon holster
        lance missile musket pistol revolver rifle saber shield slingshot spear sword target
        torpedo trident whip
    """,
    "vehicles": """
        aircraft airliner airplane airship ambulance anchor barge bicycle bike biplane blimp
        boat bobsled boxcar buggy bulldozer bumper bus cab caboose camper canoe car caravan cart
        carriage catamaran chariot cockpit convertible dashboard dinghy engine excavator ferry
        forklift freighter galleon glider gondola hatchback headlight hearse helicopter
        houseboat hovercraft hubcap jeep jet kayak lifeboat limousine locomotive lorry mast
        minivan monorail moped motorbike motorboat motorcycle motorhome oar parachute pedal
        pickup propeller raft rickshaw rocket rover rowboat rudder sail sailboat schooner
        scooter seaplane seatbelt sedan shuttle ship sleigh snowmobile spacecraft spaceship
        speedboat stagecoach steamboat streetcar submarine subway tank tanker taxi tire toboggan
        tractor trailer train tram tricycle trolley truck tugboat unicycle van wagon warship
        wheel windshield yacht zeppelin handlebar
    """,
    "buildings_and_structures": """
        abbey airport alley amphitheater apartment aquarium aqueduct arch archway arena atrium
        attic auditorium avenue bakery balcony ballroom barbershop barn barnyard basement
        bathroom bazaar bedroom billboard birdhouse boardwalk bookstore booth boutique brewery
        bridge bungalow bunker cabin cafe campus canal casino castle cathedral cellar cemetery
        chalet chapel chimney church cinema citadel classroom column convent coop corral
        corridor cottage courthouse courtyard crosswalk crypt dam deck dock dome door doorway
        dormitory doghouse drain drawbridge driveway dungeon elevator escalator factory farm
        farmhouse fence footpath fort fortress fountain foyer gallery garage garden gate gazebo
        graveyard greenhouse gutter gym gymnasium hallway hangar harbor henhouse highway
        hospital hotel house hut hydrant igloo intersection jetty kennel kiosk kitchen
        laboratory lamppost library lighthouse lobby loft mall manhole mansion marina market
        mausoleum mill minaret moat monastery monument mosque motel museum nightclub obelisk
        observatory office outhouse paddock pagoda palace pantry park patio pavement pavilion
        penthouse pergola pharmacy pier pigpen pillar pipe plaza platform playground porch
        prison promenade pub pylon pyramid quarry railroad ramp ranch refinery restaurant road
        roof rooftop roundabout runway school shed shop shrine sidewalk signpost silo
        skyscraper skylight stable stadium staircase station statue steeple storefront store
        streetlight studio supermarket synagogue temple tent terrace theater tollbooth tomb
        tower townhouse trail treehouse trellis tunnel turret veranda viaduct villa wall
        warehouse wharf window windmill winery zoo
    """,
    "landscape_and_nature": """
        archipelago ash asteroid atoll aurora avalanche bay beach blizzard bog boulder brook
        canyon cave cavern cliff cloud coast coastline comet constellation cove crater creek
        crevasse delta desert dew dirt driftwood dune dust eclipse ember field fire fjord flame
        fog forest fossil frost galaxy geyser glacier gorge grassland hail hill hurricane ice
        iceberg icicle island jungle lagoon lake lava lightning marsh meadow mesa meteor mist
        moon moor mound mountain mud nebula oasis ocean pasture pebble peninsula planet plateau
        pond prairie puddle rain rainbow raindrop rainforest rapids ravine reef ridge river
        riverbank rock sand sandstorm savanna sea seashore shadow shore sky smoke snow
        snowdrift snowflake soil stalactite stalagmite star stone stream summit sun sunlight
        sunrise sunset swamp thunderstorm tornado tundra valley volcano waterfall wave wetland
        whirlpool woods
    """,
    "plants": """
        acorn algae aloe aspen azalea bamboo baobab bark barley beech birch blossom bluebell
        bonsai bouquet branch bud bush buttercup cactus carnation cattail cedar chrysanthemum
        clover crocus cypress daffodil daisy dandelion elm eucalyptus fern fir flax flower
        foliage foxglove garland geranium grass hay heather hedge hibiscus holly iris ivy
        jasmine lavender leaf lichen lilac lily log lotus magnolia mangrove maple marigold
        mistletoe moss nettle oak oat orchard orchid papyrus peony petal pine pinecone
        poinsettia pollen poplar poppy primrose redwood reed root rose sapling seaweed seed
        seedling sequoia shamrock shrub snowdrop spruce sprout stem stump succulent sugarcane
        sunflower sycamore thistle thorn tree tulip tumbleweed twig vine vineyard violet weed
        wheat willow wreath
    """,
    "materials": """
        aluminum asphalt basalt brass brick bronze burlap canvas cardboard cashmere cement
        ceramic charcoal chiffon chrome clay coal concrete copper cork corduroy cotton crystal
        denim enamel fabric felt fiberglass flannel foam foil glass glitter gold granite gravel
        iron ivory lace lacquer leather limestone linen lumber marble mesh metal mortar nylon
        obsidian oil paint paper plank plaster plastic plywood polyester porcelain quartz
        rattan resin ribbon rubber rust sandstone satin sequin silk silver slate steel straw
        string stucco suede tar terracotta tile timber tin tweed twine velvet vinyl wax wicker
        wood wool gasoline
    """,
    "art_and_everyday_objects": """
        altar ashtray bag banknote banner barrel beacon box buoy cage candelabra cane carton
        cask chalice cigar cigarette coffin coin confetti crate cross drawing dreamcatcher
        figurine firework fishbowl flag gift hourglass incense keg lighter luggage mannequin
        matchstick megaphone menorah mosaic mural package painting palette paintbrush parcel
        pennant photograph placard plaque podium portrait pottery pouch rosary sack scepter
        sculpture sign sketch spotlight stage streamer suitcase sundial tapestry tinsel
        tombstone torch totem tub urn wand birdcage campfire gravestone loudspeaker vat
        tinfoil
    """,
    "solids": """
        cube sphere cone cylinder
    """,
    "people_and_characters": """
        acrobat actor actress alien angel archer architect astronaut athlete baby baker
        ballerina banker barber barista bartender bishop blacksmith bodyguard boxer boy bride
        businessman businesswoman busker butcher butler cameraman captain carpenter cashier
        caveman cellist cheerleader chef chauffeur child clerk climber clown conductor courier
        cowboy cowgirl cyborg cyclist dancer dentist detective diver doctor drummer electrician
        elf emperor empress engineer fairy farmer firefighter fisherman gardener gentleman
        ghost girl gladiator goblin golfer grandfather grandmother groom guard guitarist
        gymnast hairdresser hiker hitchhiker hunter imam infant janitor jester jockey
        journalist judge juggler king knight lady lawyer librarian lifeguard lumberjack
        magician maid mailman man mechanic merchant mermaid mime miner monk mummy musician
        nanny newborn ninja nun officer ogre painter paramedic passenger pedestrian pharaoh
        photographer pianist pilot pirate plumber policeman pope postman priest prince princess
        prisoner professor programmer queen rabbi rancher rapper receptionist referee reporter
        runner sailor salesman samurai schoolboy schoolgirl scientist sculptor shaman shepherd
        sheriff singer skater skier soldier spectator student superhero surfer surgeon swimmer
        tailor teacher teenager toddler tourist troll unicorn vampire vendor viking violinist
        waiter waitress welder witch wizard woman wrestler zombie dragon
    """,
}


def build_words() -> list[str]:
    """The lines of ``words.txt``: every word of :data:`WORDS`, sorted.

    Raises ``ValueError`` if a word is not a single lowercase ASCII word or is listed twice,
    so that the hand-written lists stay clean.
    """
    category_of: dict[str, str] = {}
    for category, block in WORDS.items():
        for word in block.split():
            if not re.fullmatch(r"[a-z]+", word):
                raise ValueError(f"{word!r} in {category!r} is not a single lowercase word")
            if word in category_of:
                raise ValueError(
                    f"{word!r} is listed under both {category_of[word]!r} and {category!r}"
                )
            category_of[word] = category
    return sorted(category_of)


# --------------------------------------------------------------------------------------------
# templates.txt: zero-shot prompt templates
# --------------------------------------------------------------------------------------------

TEMPLATES = split_items(
    """
    a photo of a {}.
    a picture showing a {}.
    an image containing a {}.
    a snapshot of a {}.
    a close-up photo of a {}.
    a {} seen from far away.
    a blurry photo of a {}.
    a grainy picture of a {}.
    a black and white photo of a {}.
    a low-resolution image of a {}.
    a poorly lit photo of a {}.
    a brightly lit photo of a {}.
    a cropped picture of a {}.
    an old faded photograph of a {}.
    a photo of a small {}.
    a photo of a large {}.
    a photo of one {}.
    a photo of my {}.
    a clean studio photo of a {}.
    a {} photographed outdoors.
    a {} in the middle of the frame.
    a partly hidden {}.
    a drawing of a {}.
    a pencil sketch of a {}.
    a watercolor painting of a {}.
    a doodle of a {}.
    a cartoon version of a {}.
    a digital illustration of a {}.
    a 3D rendering of a {}.
    a plastic toy {}.
    a sculpture of a {}.
    an origami {}.
    a tattoo of a {}.
    an embroidered {}.
    a {} in a video game.
    a pixelated picture of a {}.
    """
)


def build_templates() -> list[str]:
    """The lines of ``templates.txt``: each template has exactly one ``{}`` placeholder."""
    for template in TEMPLATES:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
        check_articles(template)
    return list(TEMPLATES)


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
