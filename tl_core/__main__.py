"""`python -m tl_core ...` — see `tl_core.cli.main`."""

import sys

from tl_core.cli.main import main

sys.exit(main())
