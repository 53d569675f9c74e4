"""`python -m gpu_node` / `stylerelay-node`."""

import os
import sys

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other work, spinning
# threads fight the busy ones for cores: a 1024x768 fast style took 2-4x longer (measured
# with bench/fast.py on a loaded 2-core machine). Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gpu_node.cli import main

if __name__ == "__main__":
    sys.exit(main())
