"""`make run`: start the relay and a local node together (coming with issue 4)."""

import sys


def main() -> int:
    """Say what is coming; the one-command start lands with the relay."""
    sys.stdout.write("Stylerelay: the relay and the local node are coming (issue 4).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
