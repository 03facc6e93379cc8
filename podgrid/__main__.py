"""``python -m podgrid`` is the same as the ``podgrid`` command."""

import sys

from podgrid.cli import main

sys.exit(main())
