"""`python -m stylerelay`: the `stylerelay` command."""

import sys

from stylerelay.cli import main

if __name__ == "__main__":
    sys.exit(main())
