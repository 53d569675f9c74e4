"""Command line of the relay: `python -m relay` serves; `python -m relay tokens ...` manages
node tokens; `python -m relay keys ...` API keys and their quotas (in the data dir, or with
`--database-url` in the replicas' PostgreSQL); `python -m relay gallery ...` moderates the
public gallery.
Errors a person caused end with exit status 2 and one line on stderr.
"""

import argparse
import asyncio
import logging
import os
import sys
import time

from relay import config as config_module
from relay import logs
from relay.apikeys import KeyStore
from relay.cluster.credentials import KeysAt, TokensAt
from relay.config import Config
from relay.errors import ConfigError, TokenError
from relay.ratelimits import Quota
from relay.server import serve
from relay.showcase import DATABASE, Item, ShowcaseStore
from relay.tokens import TokenStore

DATABASE_VARIABLE = config_module.ENV_PREFIX + "DATABASE_URL"
CLUSTER_VARIABLES = (DATABASE_VARIABLE, config_module.ENV_PREFIX + "BLOB_URL")


def build_parser() -> argparse.ArgumentParser:
    """The relay's parser: serving flags at the top, `tokens` as the one subcommand."""
    parser = argparse.ArgumentParser(
        prog="stylerelay-relay",
        description="Stylerelay relay: the web page and API, and the port GPU nodes dial.",
        # Whole flag names only: `keys add --node` must not read as a prefix of --node-port,
        # and a shortened serving flag is a typo waiting to happen.
        allow_abbrev=False,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    config_module.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    tokens = sub.add_parser("tokens", help="add, list or revoke node tokens")
    # SUPPRESS keeps a --data-dir given before `tokens` from being reset by this one.
    tokens.add_argument(
        "--data-dir", dest="data_dir", default=argparse.SUPPRESS, help="the relay's data dir"
    )
    _database_flag(tokens)
    verbs = tokens.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="create a token for a new node and print it")
    add.add_argument("name", help="the node's name (letters, digits, '.', '_', '-')")
    listing = verbs.add_parser("list", help="list nodes holding a token")
    revoke = verbs.add_parser("revoke", help="revoke a node's token")
    revoke.add_argument("name")
    for verb in (add, listing, revoke):
        verb.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
        _database_flag(verb)
    _add_keys_parser(sub)
    shown = sub.add_parser("gallery", help="list, hide, restore or delete public gallery items")
    shown.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
    acts = shown.add_subparsers(dest="verb", metavar="VERB", required=True)
    acts.add_parser("list", help="every item: id, shared, reports, hidden or shown")
    for name, text in GALLERY_VERBS.items():
        act = acts.add_parser(name, help=text)
        act.add_argument("id", help="the gallery item's id (as listed; not a job id)")
    for choice in acts.choices.values():
        choice.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
    return parser


def _add_keys_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = sub.add_parser("keys", help="add, list or revoke API keys and their quotas")
    keys.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
    _database_flag(keys)
    verbs = keys.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="create an API key and print it (shown only once)")
    add.add_argument("name", help="the key's name (letters, digits, '.', '_', '-')")
    add.add_argument("--max-open", type=int, help="jobs queued or running at once")
    add.add_argument("--per-minute", type=int, help="new jobs a minute")
    add.add_argument("--per-day", type=int, help="new jobs a day")
    add.add_argument(
        "--priority", type=int, default=0, help="extra jobs served per turn of the queue"
    )
    add.add_argument(
        "--node",
        help="a node token's name: the key earns extra turns in proportion to that node's work",
    )
    listing = verbs.add_parser("list", help="list keys and their quotas")
    revoke = verbs.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    for verb in (add, listing, revoke):
        verb.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
        _database_flag(verb)


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        dest="database_url",
        default=argparse.SUPPRESS,
        help="cluster mode: act on the replicas' PostgreSQL, not on the data dir's file",
    )


def _database_url(flags: dict[str, str | None]) -> str | None:
    """Where `tokens` and `keys` act in cluster mode: --database-url or its variable. It
    and --blob-url are taken out of `flags`: these commands need no blob store, which a
    replica's config would insist on beside the database."""
    raw = flags.pop("database_url", None) or os.environ.get(DATABASE_VARIABLE)
    flags.pop("blob_url", None)
    if raw is None:
        return None
    cast = config_module.SETTINGS["database_url"][0]
    try:
        url: str = cast(raw)
    except ValueError as exc:
        raise ConfigError(f"--database-url: {exc}") from None
    return url


def _keys(args: argparse.Namespace, config: Config, url: str | None) -> int:
    store = KeyStore(config.data_dir) if url is None else KeysAt(url)
    match args.verb:
        case "add":
            quota = Quota(args.max_open, args.per_minute, args.per_day, args.priority, args.node)
            key = store.add(args.name, quota)
            sys.stdout.write(key + "\n")
            sys.stderr.write(
                f"API key {args.name!r} saved (hashed) in {store.path}.\n"
                "Give it to its holder now; it is not shown again.\n"
            )
        case "list":
            for info in store.list():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created))
                q = info.quota

                def shown(value: int | None) -> str:
                    return "default" if value is None else str(value)

                sys.stdout.write(
                    f"{info.name}\t{created} UTC\tmax-open {shown(q.max_open)}\t"
                    f"per-minute {shown(q.per_minute)}\tper-day {shown(q.per_day)}\t"
                    f"priority {q.priority}\tnode {q.node or '-'}\n"
                )
        case "revoke":
            store.revoke(args.name)
            sys.stderr.write(f"API key {args.name!r} revoked.\n")
    return 0


GALLERY_VERBS = {
    "hide": "hide an item until restored",
    "restore": "show a hidden item again, its reports reviewed",
    "delete": "remove an item for good",
}


def _gallery(args: argparse.Namespace, config: Config) -> int:
    item_id = getattr(args, "id", None)
    if config.cluster:  # the replicas' one gallery, in PostgreSQL
        from relay.cluster.gallery import moderate  # noqa: PLC0415 (only cluster mode)

        outcome = asyncio.run(moderate(config, args.verb, item_id))
    else:
        outcome = _moderate(config, args.verb, item_id)
    if isinstance(outcome, list):
        for item in outcome:
            shared = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.shared))
            state = f"hidden ({item.hidden})" if item.hidden else "shown"
            line = f"{item.id}\t{shared} UTC\t{item.method}\t{item.style}"
            sys.stdout.write(f"{line}\t{item.reports} report(s)\t{state}\n")
        return 0
    if not outcome:
        sys.stderr.write(f"stylerelay-relay: no gallery item {item_id!r}.\n")
        return 2
    sys.stderr.write(f"Gallery item {item_id!r}: {args.verb} done.\n")
    return 0


def _moderate(config: Config, verb: str, item_id: str | None) -> list[Item] | bool:
    store = ShowcaseStore(config.data_dir / DATABASE)
    try:
        if verb == "list":
            return store.all()
        change = {"hide": store.hide, "restore": store.restore, "delete": store.delete}
        return change[verb](str(item_id))
    finally:
        store.close()


def _tokens(args: argparse.Namespace, config: Config, url: str | None) -> int:
    store = TokenStore(config.data_dir) if url is None else TokensAt(url)
    match args.verb:
        case "add":
            token = store.add(args.name)
            sys.stdout.write(token + "\n")
            sys.stderr.write(
                f"Token for node {args.name!r} saved (hashed) in {store.path}.\n"
                "Give it to the node's owner now; it is not shown again.\n"
            )
        case "list":
            for info in store.list():
                created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created))
                sys.stdout.write(f"{info.name}\t{created} UTC\n")
        case "revoke":
            store.revoke(args.name)
            sys.stderr.write(f"Token of node {args.name!r} revoked.\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, then serve or manage tokens; return the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    flags = {name: getattr(args, name, None) for name in config_module.SETTINGS}
    try:
        if args.command in ("tokens", "keys"):
            url = _database_url(flags)
            environ = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
            config = Config.load(flags, environ)
            logs.setup(config.log_format, logging.DEBUG if args.verbose else logging.INFO)
            return (_tokens if args.command == "tokens" else _keys)(args, config, url)
        config = Config.load(flags, os.environ)
        logs.setup(config.log_format, logging.DEBUG if args.verbose else logging.INFO)
        if args.command == "gallery":
            return _gallery(args, config)
        serve(config)
    except (ConfigError, TokenError) as exc:
        sys.stderr.write(f"stylerelay-relay: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
