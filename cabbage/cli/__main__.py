"""``python -m cabbage.cli``: the `cabbage` command, for where its script is not on PATH."""

import sys

from cabbage.cli import main

sys.exit(main())
