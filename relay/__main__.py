"""`python -m relay` / `stylerelay-relay`."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the relay (coming with issue 4)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write("usage: python -m relay [options]\n\nThe relay server is coming.\n")
        return 0
    sys.stderr.write("stylerelay-relay: the relay server is coming (issue 4).\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
