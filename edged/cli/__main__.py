"""``python -m edged.cli``: the same as the ``edged`` console script."""

import sys

from . import main

sys.exit(main())
