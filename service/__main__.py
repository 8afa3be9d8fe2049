"""``python -m service``: the same as ``metalic serve``."""

from service.serve import main

raise SystemExit(main())
