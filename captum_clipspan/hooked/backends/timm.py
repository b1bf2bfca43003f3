"""timm towers inside open_clip's ``TimmModel`` (not yet described: refused)."""

from __future__ import annotations

from torch import nn

from ..spec import TowerSpec
from . import unsupported


def timm_tower_spec(visual: nn.Module) -> TowerSpec:
    raise unsupported("This image tower is a timm model (TimmModel).")


def timm_trunk_spec(trunk: nn.Module, head: nn.Module | None) -> TowerSpec:
    raise unsupported(f"This image tower is a timm {type(trunk).__name__}.")
