"""Former home of the synthetic scenes, now :mod:`captum_clipspan.toy.scenes` (re-exported here
with a ``FutureWarning``)."""

import warnings

from .toy.scenes import *  # noqa: F403
from .toy.scenes import __all__  # noqa: F401

warnings.warn("captum_clipspan.datasets is now captum_clipspan.toy.scenes.", FutureWarning,
              stacklevel=2)
