"""Pixels of the synthetic scenes: counter-based random numbers, shape and texture masks, and the
clutter of the ``"clutter"`` world.

Pure numpy on coordinate grids, without anti-aliasing, so a mask marks exactly the pixels that
carry its color. :mod:`captum_clipspan.toy.scenes` names the attributes and draws the scenes;
this module only paints.

The clutter (:func:`paint_clutter`) makes a scene that colour alone cannot segment: one to three
*distractors* (diamonds, bars and half-discs, shapes no caption names, in the objects' own
colors and of sizes spanning both object sizes) in the two columns the objects do not occupy,
and *confetti*, small squares of object colors scattered over the background.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CLUTTER_SHAPES",
    "CLUTTER_SLOTS",
    "MASK64",
    "clutter_mask",
    "paint_clutter",
    "shape_mask",
    "splitmix64",
    "texture_mask",
    "uniforms",
]

MASK64 = (1 << 64) - 1

CLUTTER_SHAPES: tuple[str, ...] = ("diamond", "bar", "half-disc")
"""Distractor outlines: none is a shape the captions name."""

_MAX_DISTRACTORS = 3
_DISTRACTOR_SLOTS = 6  # shape, color, column, x jitter, y, radius (+ a bar's orientation: shape)
_CONFETTI = 16
CLUTTER_SLOTS = 1 + _MAX_DISTRACTORS * _DISTRACTOR_SLOTS + 3 * _CONFETTI
"""Uniforms per scene that :func:`paint_clutter` reads."""


def splitmix64(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, which is what the mixer wants.
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, index: np.ndarray, n_slots: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1): shape [N, n_slots], depending only on (seed, index)."""
    key = splitmix64(np.array([seed & MASK64], dtype=np.uint64))
    base = splitmix64(key ^ index.astype(np.uint64))
    slots = np.arange(1, n_slots + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    bits = splitmix64(base[:, None] ^ slots[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` centred at the origin; dx [n,1,W], dy [n,H,1], r [n,1,1]."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.82 * r
    if shape == "triangle":
        return (dy >= -r) & (dy <= 0.75 * r) & (np.abs(dx) <= 0.5715 * (dy + r))
    if shape == "cross":
        ax, ay, arm = np.abs(dx), np.abs(dy), 0.3 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def texture_mask(texture: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Pattern pixels; x [n,1,W] and y [n,H,1] are integer pixel coords with a random phase."""
    cell = max(2, size // 16)
    if texture == "plain":
        return np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    if texture == "striped":
        return ((x + y) // cell) % 2 == 0
    if texture == "checkered":
        return ((x // cell) + (y // cell)) % 2 == 0
    if texture == "dotted":
        period = 2 * cell
        cx = (x % period) - (period - 1) / 2
        cy = (y % period) - (period - 1) / 2
        return cx * cx + cy * cy <= (cell / 2) ** 2 - 1.5
    raise ValueError(f"unknown texture {texture!r}")


def clutter_mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray,
                 vertical: np.ndarray | bool = False) -> np.ndarray:
    """Boolean mask of a distractor outline (:data:`CLUTTER_SHAPES`) centred at the origin."""
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    if kind == "bar":
        long, short = np.where(vertical, dy, dx), np.where(vertical, dx, dy)
        return (np.abs(long) <= r) & (np.abs(short) <= 0.3 * r)
    if kind == "half-disc":
        return (dx * dx + dy * dy <= r * r) & (dy >= -0.1 * r)
    raise ValueError(f"unknown clutter shape {kind!r}; choose from {list(CLUTTER_SHAPES)}")


def paint_clutter(images: np.ndarray, objects: np.ndarray, column: np.ndarray,
                  palette: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Paint distractors and confetti over the background of ``images``, in place.

    Args:
        images: uint8 ``[N, S, S, 3]`` scenes already painted (background and objects).
        objects: bool ``[N, S, S]``, the objects' pixels: never painted over.
        column: int ``[N]``, the third (0, 1, 2) the objects sit in; distractors take the others.
        palette: uint8 ``[C, 3]``, the colors distractors and confetti draw from.
        u: uniforms ``[N, CLUTTER_SLOTS]``.

    Returns:
        bool ``[N, S, S]``: the distractors' pixels (confetti excluded).
    """
    n, side = images.shape[0], images.shape[1]
    coords = np.arange(side, dtype=np.float32) + 0.5
    xs, ys = coords[None, None, :], coords[None, :, None]
    free = ~objects
    # Confetti first, so distractors cover them: squares of side/32 pixels in palette colors.
    cell = max(1, side // 32)
    base = 1 + _MAX_DISTRACTORS * _DISTRACTOR_SLOTS
    for c in range(_CONFETTI):
        x0 = (u[:, base + 3 * c] * (side - cell)).astype(np.int64)
        y0 = (u[:, base + 3 * c + 1] * (side - cell)).astype(np.int64)
        color = np.minimum((u[:, base + 3 * c + 2] * len(palette)).astype(np.int64),
                           len(palette) - 1)
        dx = np.arange(side)[None, None, :] - x0[:, None, None]
        dy = np.arange(side)[None, :, None] - y0[:, None, None]
        square = (dx >= 0) & (dx < cell) & (dy >= 0) & (dy < cell)
        paint = square & free
        images[paint] = np.repeat(palette[color], paint.reshape(n, -1).sum(1), axis=0)
    distractors = np.zeros((n, side, side), dtype=bool)
    count = 1 + np.minimum((u[:, 0] * _MAX_DISTRACTORS).astype(np.int64), _MAX_DISTRACTORS - 1)
    width = side / 3.0
    for k in range(_MAX_DISTRACTORS):
        slot = 1 + k * _DISTRACTOR_SLOTS
        pick = u[:, slot] * len(CLUTTER_SHAPES)
        kind = np.minimum(pick.astype(np.int64), len(CLUTTER_SHAPES) - 1)
        vertical = (pick - kind) >= 0.5  # the shape draw's remainder orients a bar
        color = np.minimum((u[:, slot + 1] * len(palette)).astype(np.int64), len(palette) - 1)
        third = (column + 1 + (u[:, slot + 2] >= 0.5)) % 3
        radius = (4.0 + 6.0 * u[:, slot + 5]) / 64 * side
        jx = np.maximum(0.0, width / 2 - radius - 0.5)
        cx = (third + 0.5) * width + (2 * u[:, slot + 3] - 1) * jx
        cy = radius + 1 + u[:, slot + 4] * np.maximum(0.0, side - 2 * radius - 2)
        for s_idx, name in enumerate(CLUTTER_SHAPES):
            sel = np.nonzero((count > k) & (kind == s_idx))[0]
            if not sel.size:
                continue
            dx = xs - cx[sel, None, None].astype(np.float32)
            dy = ys - cy[sel, None, None].astype(np.float32)
            r = radius[sel, None, None].astype(np.float32)
            mask = clutter_mask(name, dx, dy, r, vertical[sel, None, None]) & free[sel]
            rows = images[sel]
            rows[mask] = np.repeat(palette[color[sel]], mask.reshape(len(sel), -1).sum(1), axis=0)
            images[sel] = rows
            distractors[sel] |= mask
    return distractors
