"""Former home of the image sources and the decomposition cache, now :mod:`captum_clipspan.sources`
and :mod:`captum_clipspan.cache` (re-exported here with a ``FutureWarning``)."""

import warnings

from .cache import CACHE_VERSION, DecompositionCache, cache_decomposition, model_fingerprint  # noqa: F401
from .sources import *  # noqa: F403

warnings.warn("captum_clipspan.data is now captum_clipspan.sources (image sources, batching) and "
              "captum_clipspan.cache (DecompositionCache, cache_decomposition).", FutureWarning,
              stacklevel=2)
