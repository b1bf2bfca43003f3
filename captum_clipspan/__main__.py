"""``python -m captum_clipspan`` runs the ``clipspan`` command."""

import sys

from .cli import main

sys.exit(main())
