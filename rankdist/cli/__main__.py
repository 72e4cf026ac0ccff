"""``python -m rankdist.cli``: the ``rankdist`` command."""

import sys

from rankdist.cli import main

sys.exit(main())
