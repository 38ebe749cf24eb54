"""``python -m stadtwacht``."""

import sys

from stadtwacht.cli import main

sys.exit(main())
