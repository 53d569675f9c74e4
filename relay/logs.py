"""Log lines for people (`text`) or for machines (`kv`, `json`), one event per line.

    event(log, "job_done", "job %s done", job=job.id, node="gpu-1", ms=1234)

`event` logs an ordinary message (so `text` output reads as before) and attaches the
event's name and fields; the `kv` and `json` formatters put them first on the line:

    ts=2026-11-23T12:00:00Z level=info logger=relay.jobs event=job_done job=abc node=gpu-1 ms=1234

Plain `log.info(...)` calls keep working: they come out as `event=log msg="..."`.
"""

import json
import logging
import time
from typing import Any

EVENT = "stylerelay_event"
FIELDS = "stylerelay_fields"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def event(
    log: logging.Logger,
    name: str,
    message: str,
    *args: object,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log `message % args` (at INFO unless `level`) as event `name` carrying `fields`."""
    log.log(level, message, *args, extra={EVENT: name, FIELDS: fields})


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": getattr(record, EVENT, "log"),
    }
    out.update(getattr(record, FIELDS, {}))
    out["msg"] = record.getMessage()
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


def _kv_value(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' "=\\\n\t'):
        return text
    # Quoted like a JSON string, so a reader can split on spaces outside quotes.
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """`key=value` pairs on one line; values with spaces or quotes are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per record, however many lines its message or traceback has."""
        fields = _record_fields(record)
        return " ".join(f"{key}={_kv_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's fields as compact JSON."""
        return json.dumps(_record_fields(record), ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter of a `--log-format` value: text, kv or json."""
    match kind:
        case "kv":
            return KeyValueFormatter()
        case "json":
            return JsonFormatter()
        case _:
            return logging.Formatter(TEXT_FORMAT)


def setup(kind: str, level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr in the chosen format.

    Like `logging.basicConfig`, it does nothing when the root logger already has handlers
    (a test runner's, or a program that embeds the relay and set up its own logging).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    root.addHandler(handler)
    root.setLevel(level)
