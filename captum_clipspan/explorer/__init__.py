"""The offline explorer: a static site for a model's heads (and, optionally, MLP neurons), built
from a decomposition cache, a TextSpan report and neuron-lens reports (``clipspan explore``,
:func:`explore`).

Modules, each importing only those listed before it: :mod:`.scores` (the grid's colourings),
:mod:`.selection` (each head's top and bottom images along its texts), :mod:`.images`
(thumbnails), :mod:`.maps` (patch maps, one decomposition pass per image for every head),
:mod:`.neurons` (the neuron pages' data), :mod:`.site` (the files) and :mod:`.build`
(:func:`explore`). The page itself is ``static/``: plain HTML, CSS and JavaScript, no network.
"""

from .build import explore

__all__ = ["explore"]
