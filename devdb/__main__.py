"""``python -m devdb``: the demo's PostgreSQL (see ``devdb.cli``)."""

import sys

from devdb.cli import main

sys.exit(main())
