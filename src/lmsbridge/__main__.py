"""``python -m lmsbridge``: the same command as the ``lmsbridge`` console script."""

import sys

from lmsbridge.cli import main

sys.exit(main())
