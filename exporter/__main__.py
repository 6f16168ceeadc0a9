"""``python -m exporter`` runs the same entry point as the console script."""

import sys

from exporter.startup import main

sys.exit(main())
