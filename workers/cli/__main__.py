"""``python -m workers.cli`` runs the ``ltxpool`` console script."""

import sys

from workers.cli import main

sys.exit(main())
