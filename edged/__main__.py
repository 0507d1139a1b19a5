"""``python -m edged``: the same as the ``edged`` console script."""

import sys

from .cli import main

sys.exit(main())
