"""``python -m orbited``: the same entry point as the ``orbited`` command."""

import sys

from orbited.cli import main

sys.exit(main())
