"""Exact direct-effect decomposition of a CLIP-ViT image embedding (Gandelsman et al., Sec. 3-4).

Pure math, one concept per module; the model is read only through the hooked tower's accessors
and hook points (``hooked/vit.py``):

- :mod:`.terms`: the result, :class:`Decomposition`, and its field lists.
- :mod:`.readout`: the readout (norms, pool, projection) and each head's output map as functions
  on tensors.
- :mod:`.weights`: reading those weights from the hooked tower.
- :mod:`.capture`: the hooks of one forward pass, restricted to the pool's rows.
- :mod:`.consistency`: the check that the terms follow a user's hooks.
- :mod:`.core`: :func:`decompose` and :func:`decompose_batches`.
- :mod:`.neuron_maps`: MLP neurons' first- and second-order effects (:func:`second_order`).
"""

from __future__ import annotations

from ..validation import check_text_embeddings, resolve_layers
from .capture import CAPTURE_BUDGET, capture_bytes_per_image, images_per_pass, rows_reduce
from .capture import _Capture as _Capture  # private, importable here as from the old module
from .capture import _row_weights as _row_weights
from .consistency import check_consistent, user_hooks
from .core import decompose, decompose_batches
from .neuron_maps import NeuronEffects, first_order, neuron_effects, second_order
from .readout import (
    NormWeights,
    ReadoutMap,
    ReadoutWeights,
    after_pool,
    attention_constant,
    head_output_weights,
    in_text_columns,
    norm_after,
    norm_then,
    pool_rows,
    projection,
    readout_constant,
    readout_map,
    token_terms,
)
from .terms import (
    CONVENTIONS,
    GRANULARITIES,
    PER_IMAGE_FIELDS,
    TERM_FIELDS,
    Decomposition,
    concatenate,
)
from .weights import _attention_constant as _attention_constant
from .weights import _detached as _detached
from .weights import _head_output as _head_output
from .weights import compute_dtype, norm_weights, readout_weights

__all__ = [
    "CAPTURE_BUDGET",
    "CONVENTIONS",
    "GRANULARITIES",
    "PER_IMAGE_FIELDS",
    "TERM_FIELDS",
    "Decomposition",
    "NeuronEffects",
    "NormWeights",
    "ReadoutMap",
    "ReadoutWeights",
    "after_pool",
    "attention_constant",
    "capture_bytes_per_image",
    "check_consistent",
    "check_text_embeddings",
    "compute_dtype",
    "concatenate",
    "decompose",
    "decompose_batches",
    "first_order",
    "head_output_weights",
    "images_per_pass",
    "in_text_columns",
    "neuron_effects",
    "norm_after",
    "norm_then",
    "norm_weights",
    "pool_rows",
    "projection",
    "readout_constant",
    "readout_map",
    "readout_weights",
    "resolve_layers",
    "rows_reduce",
    "second_order",
    "token_terms",
    "user_hooks",
]
