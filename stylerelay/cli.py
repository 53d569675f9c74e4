"""The `stylerelay` command: `paint` a photo on a relay, list its `styles`.

    stylerelay paint photo.jpg --style fast:candy --relay https://relay.example -o out.png
    stylerelay styles --relay https://relay.example

The relay and an API key may also come from STYLERELAY_URL and STYLERELAY_KEY. Progress is
one line on stderr, redrawn in place. Exit status: 0 done, 1 the job failed or was
cancelled, 2 the request was refused or the relay unreachable (the message on stderr).
"""

import argparse
import asyncio
import os
import sys
from typing import Any, TextIO

from stylerelay.client import AsyncClient, Event
from stylerelay.errors import ClientError, JobEnded

BAR = 30


class Progress:
    """One status line on a stream: a bar while epochs run, words otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._width = 0

    def show(self, event: Event) -> None:
        """Redraw the line for an event."""
        kind = event.get("type")
        # `epochs`, the planned count, was `max_epochs` in relays before issue 12.
        total = int(event.get("epochs") or event.get("max_epochs") or 0)
        if kind == "progress" and total:
            done = int(event["epoch"])
            filled = BAR * done // total
            text = f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} epochs"
        elif kind == "queued" or (kind == "state" and event["job"]["state"] == "queued"):
            position = event.get("position") or event.get("job", {}).get("position")
            text = f"queued (position {position})" if position else "queued"
        elif kind == "started":
            text = f"running on {event.get('node')}"
        elif kind in ("done", "failed", "cancelled"):
            text = str(kind)
        else:
            return
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        if kind in ("done", "failed", "cancelled"):
            self.stream.write("\n")
        self.stream.flush()


def build_parser() -> argparse.ArgumentParser:
    """`stylerelay paint` and `stylerelay styles`."""
    parser = argparse.ArgumentParser(prog="stylerelay", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    paint = sub.add_parser("paint", help="paint a photo in a style and save the PNG")
    paint.add_argument("photo", help="the photo (PNG, JPEG or WebP)")
    paint.add_argument("--style", action="append", required=True, help="style id; repeat to blend")
    paint.add_argument("--method", choices=["gatys", "fast", "arbitrary"])
    paint.add_argument("--epochs", type=int)
    paint.add_argument("--size", type=int, help="longest side of the result in pixels")
    paint.add_argument("-o", "--out", required=True, help="where to write the result PNG")
    styles = sub.add_parser("styles", help="list the relay's styles and methods")
    for command in (paint, styles):
        command.add_argument("--relay", default=os.environ.get("STYLERELAY_URL"), help="URL")
        command.add_argument("--key", default=os.environ.get("STYLERELAY_KEY"), help="API key")
    return parser


async def _paint(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    async with AsyncClient(args.relay, key=args.key) as relay:
        options: dict[str, Any] = {"method": args.method, "epochs": args.epochs, "size": args.size}
        job = await relay.submit(args.photo, args.style, **options)
        sys.stderr.write(f"Job {job['id']} submitted.\n")
        await relay.wait(job["id"], progress.show)
        path = await relay.download(job["id"], args.out)
    sys.stderr.write(f"Saved {path}.\n")
    return 0


async def _styles(args: argparse.Namespace) -> int:
    async with AsyncClient(args.relay, key=args.key) as relay:
        view = await relay.styles()
    for style in view["styles"]:
        sys.stdout.write(f"{style['id']}\t{style['kind']}\t{style['name']}\n")
    for method in view["methods"]:
        state = "available" if method["available"] else "no node now"
        sys.stdout.write(f"method {method['id']}\t{state}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status."""
    args = build_parser().parse_args(argv)
    if not args.relay:
        sys.stderr.write("stylerelay: give the relay's URL with --relay or STYLERELAY_URL.\n")
        return 2
    try:
        return asyncio.run(_paint(args) if args.command == "paint" else _styles(args))
    except JobEnded as exc:
        sys.stderr.write(f"stylerelay: {exc}\n")
        return 1
    except (ClientError, OSError) as exc:
        sys.stderr.write(f"stylerelay: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
