"""``python -m captum_clipspan.cli`` runs the ``clipspan`` command (torchrun starts the
processes of ``--nproc`` this way)."""

import sys

from . import main

sys.exit(main())
