"""`python -m gpu_node` / `stylerelay-node`."""

import sys

from gpu_node.cli import main

if __name__ == "__main__":
    sys.exit(main())
