"""``python -m regioncap``: the command line (see regioncap.cli)."""

from regioncap.cli import main

raise SystemExit(main())
