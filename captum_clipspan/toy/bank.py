"""The toy models' text bank: every attribute phrase of the synthetic scenes."""

from __future__ import annotations

from .scenes import ATTRIBUTES, zero_shot_prompts


def toy_bank() -> tuple[list[str], list[str]]:
    """The toy model's bank: every attribute phrase of the synthetic scenes, and its family."""
    texts, families = [], []
    for family, values in ATTRIBUTES.items():
        for value in values:
            prompts = zero_shot_prompts(family, value)
            texts += prompts
            families += [family] * len(prompts)
    return texts, families
