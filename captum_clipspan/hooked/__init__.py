"""Hooked open_clip towers with TransformerLens hook points."""

from .clip import HookedCLIP
from .vit import HookedViT

__all__ = ["HookedCLIP", "HookedViT"]
