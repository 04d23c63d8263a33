"""`python -m shouwang`: the same as the `shouwang` command."""

import sys

from shouwang.cli import main

sys.exit(main())
