"""`python -m specprobe ...`: the same as the `specprobe` command."""

import sys

from specprobe.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
