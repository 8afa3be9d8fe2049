"""``python -m worker``: the same as ``metalic worker``."""

from worker.main import main

raise SystemExit(main())
