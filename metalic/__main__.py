"""``python -m metalic``: the same as the ``metalic`` command."""

import sys

from metalic.cli import main

sys.exit(main())
