"""``python -m mtl scan PATH... --out DIR``: the same as the ``mtl`` command."""

import sys

from .cli import main

sys.exit(main())
