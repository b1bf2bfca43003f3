"""transformers CLIP and SigLIP vision towers (not yet described: refused)."""

from __future__ import annotations

from torch import nn

from ..spec import TowerSpec
from . import unsupported


def transformers_tower_spec(visual: nn.Module) -> TowerSpec:
    raise unsupported(f"This image tower is a transformers {type(visual).__name__}.")
