"""``python -m ltxpool.cli`` runs the ``ltxpool`` console script."""

import sys

from ltxpool.cli import main

sys.exit(main())
