"""`python -m pochta` is the `pochta` command."""

import sys

from .cli import main

sys.exit(main())
