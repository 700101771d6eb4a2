"""The session log: one JSON-lines file per run, plus the terminal handler of the UI.

Everything pc-switcher logs goes through the stdlib logger ``pcswitcher`` (and its children). Callers
attach context with ``extra``::

    log.info("copied", extra={"job": "my_job", "host": "target1", "fields": {"files": 12}})

The file ``<logs_dir>/<run_id>.jsonl`` holds one JSON object per record::

    {"time": "2026-11-27T23:50:01.123Z", "level": "INFO", "job": "my_job", "host": "target1",
     "message": "copied", "files": 12}

Secrets never reach a handler: every handler carries a :class:`RedactingFilter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from pcswitcher import paths
from pcswitcher.errors import UsageError

LOGGER_NAME = "pcswitcher"
MASK = "***"
LOG_SUFFIX = ".jsonl"

#: Rich styles of the log levels, shared by the UI and :func:`render_log`.
LEVEL_STYLES: dict[str, str] = {
    "DEBUG": "dim",
    "INFO": "",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bold red reverse",
}

#: What `pc-switcher logs` says after a log that has no end record.
NO_END = "(no outcome recorded: the run is still running, or it was killed before it could write one)"

LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# The keys of the JSON object that ``fields`` may not overwrite.
_CORE_KEYS = ("time", "level", "job", "host", "message")

# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------

# A field or key whose name contains one of these is a secret (case-insensitive).
_SENSITIVE_NAME = re.compile(
    r"password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key|become[_-]?pass"
    r"|authorization|cookie",
    re.IGNORECASE,
)
_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# scheme://user:password@  (the user stays, the password goes)
_URL_CREDENTIALS = re.compile(r"(?<![\w+.-])([A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@'\"]*:)([^\s@/'\"]+)@")
# A key followed by ":" or "=" (JSON and Python-repr quotes allowed around the key). The lookbehind
# makes every word a single match start, so a long word costs linear time, never quadratic; "/"
# in it keeps paths such as "/etc/passwd:" from counting as keys.
_PAIR_KEY = re.compile(r"(?<![\w./-])([\w.-]{1,100})([\"']?[ \t]*[:=][ \t]*)")
_QUOTED = r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'"
_VALUE = re.compile(rf"{_QUOTED}|[^\s,;&)\]}}]+")
_COOKIE_VALUE = re.compile(rf"{_QUOTED}|[^\r\n]+")
_AUTH_VALUE = re.compile(
    rf"{_QUOTED}|(?:(?:bearer|basic|digest|token|negotiate|ntlm)[ \t]+)?[^\s,;\"']+", re.IGNORECASE
)
_AUTH_SCHEME = re.compile(r"^(?:bearer|basic|digest|token|negotiate|ntlm)[ \t]+", re.IGNORECASE)


def is_sensitive_name(name: str) -> bool:
    """True when a field or key of this name holds a secret."""
    return _SENSITIVE_NAME.search(name) is not None


def _mask_value(value: str, kind: str) -> str:
    quote = value[0] if value[:1] in ('"', "'") and len(value) >= 2 and value[-1] == value[0] else ""
    inner = value[1:-1] if quote else value
    keep = ""
    if kind == "auth":
        scheme = _AUTH_SCHEME.match(inner)
        if scheme:
            keep = scheme.group(0)
    return f"{quote}{keep}{MASK}{quote}"


def _redact_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PAIR_KEY.finditer(text):
        if match.start() < pos:
            continue  # inside a value already masked
        key = match.group(1).lower()
        if _SENSITIVE_NAME.search(key) is None:
            continue
        if "authorization" in key:
            kind, value_re = "auth", _AUTH_VALUE
        elif "cookie" in key:
            kind, value_re = "cookie", _COOKIE_VALUE
        else:
            kind, value_re = "plain", _VALUE
        value = value_re.match(text, match.end())
        if value is None:
            continue
        if value.group(0) == MASK:
            pos = value.end()
            continue
        out.append(text[pos : match.end()])
        out.append(_mask_value(value.group(0), kind))
        pos = value.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """Mask the secrets in a text: private key blocks, ``key=value``/``key: value`` pairs whose key
    names a secret, ``Authorization: Bearer …`` and ``Cookie:`` headers, passwords in URLs.

    Text without any of the trigger words is returned unchanged (and fast).
    """
    if not text:
        return text
    if "PRIVATE KEY-----" in text:
        text = _PEM_BLOCK.sub(MASK, text)
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    if _SENSITIVE_NAME.search(text) is not None:
        text = _redact_pairs(text)
    return text


def redact_fields(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (dicts, lists, strings, scalars) with the secrets masked: the value of every
    key that names a secret becomes ``***``, strings are passed through :func:`redact`."""
    if _depth > 32:
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if is_sensitive_name(str(k)) else redact_fields(v, _depth + 1)) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_fields(v, _depth + 1) for v in value]
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in a record (message, ``fields``, exception text) before any handler sees it.

    It changes the record in place (once: a record passed on to a second handler is not redone), so
    it never drops a record: :meth:`filter` always returns True.
    """

    _MARK = "_pcswitcher_redacted"

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self._MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        fields = getattr(record, "fields", None)
        if fields is not None:
            record.fields = redact_fields(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, self._MARK, True)
        return True


# --------------------------------------------------------------------------------------------------
# The JSON-lines file
# --------------------------------------------------------------------------------------------------


def record_context(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The ``job`` and ``host`` of a record (``None`` when not given)."""
    job = getattr(record, "job", None)
    host = getattr(record, "host", None)
    return (None if job is None else str(job), None if host is None else str(host))


def iso_utc(created: float) -> str:
    """``2026-11-27T23:50:01.123Z`` for a ``time.time()`` value."""
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, see the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        job, host = record_context(record)
        data: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "job": job,
            "host": host,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                name = str(key)
                data[f"field_{name}" if name in _CORE_KEYS else name] = value
        elif fields is not None:
            data["fields"] = fields
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False, default=str)


def level_number(level: str) -> int:
    """The number of a level name (``"info"`` → 20); :class:`UsageError` for an unknown name."""
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise UsageError(f"unknown log level {level!r}", f"use one of {', '.join(LEVELS)}")
    return int(logging.getLevelNamesMapping()[name])


def _make_private_dirs(directory: Path) -> None:
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


class _SessionFileHandler(logging.FileHandler):
    """The JSON-lines file handler (a marker class: :func:`setup_logging` closes only these)."""


def setup_logging(
    log_path: Path,
    file_level: str,
    terminal_handler: logging.Handler | None,
    terminal_level: str,
) -> logging.Logger:
    """Send the ``pcswitcher`` logger to ``log_path`` (JSON lines, at ``file_level``) and to the
    terminal handler (at ``terminal_level``). Idempotent per process: the handlers of an earlier call
    are replaced. Missing parent folders are created with mode 0700, the file with mode 0600."""
    file_number = level_number(file_level)
    terminal_number = level_number(terminal_level)
    logger = logging.getLogger(LOGGER_NAME)
    _remove_handlers(logger)

    _make_private_dirs(log_path.parent)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)

    redacting = RedactingFilter()
    file_handler = _SessionFileHandler(log_path, mode="a", encoding="utf-8")
    file_handler.setLevel(file_number)
    file_handler.setFormatter(JsonLineFormatter())
    file_handler.addFilter(redacting)
    logger.addHandler(file_handler)

    levels = [file_number]
    if terminal_handler is not None:
        terminal_handler.setLevel(terminal_number)
        if not any(isinstance(f, RedactingFilter) for f in terminal_handler.filters):
            terminal_handler.addFilter(redacting)
        logger.addHandler(terminal_handler)
        levels.append(terminal_number)

    logger.setLevel(min(levels))
    logger.propagate = False
    return logger


def _remove_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if isinstance(handler, _SessionFileHandler):
            with contextlib.suppress(OSError):
                handler.close()


def shutdown_logging() -> None:
    """Flush and close the session file; detach every handler of the ``pcswitcher`` logger."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        with contextlib.suppress(OSError, ValueError):
            handler.flush()
    _remove_handlers(logger)


# --------------------------------------------------------------------------------------------------
# Reading the logs back
# --------------------------------------------------------------------------------------------------


def list_logs(logs_dir: Path) -> list[Path]:
    """The session logs in ``logs_dir``, newest first (by the start time in the run id when the name
    has one, else by modification time). An absent folder has none."""
    try:
        candidates = [p for p in logs_dir.iterdir() if p.name.endswith(LOG_SUFFIX) and p.is_file()]
    except OSError:
        return []
    return paths.newest_first(candidates)


def latest_log(logs_dir: Path) -> Path | None:
    """The newest session log, or ``None``."""
    logs = list_logs(logs_dir)
    return logs[0] if logs else None


def _local_time(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _number_text(value: float) -> str:
    """A float rounded for reading: ``0.5007221989999948`` → ``0.501``, ``12.0`` → ``12``."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _field_text(value: Any) -> str:
    # containers readably, without JSON braces: (key=value, ...) and [item, ...]; floats rounded
    if isinstance(value, Mapping):
        return "(" + ", ".join(f"{k}={_field_text(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_field_text(v) for v in value) + "]"
    if isinstance(value, str):
        plain = value and not any(c.isspace() for c in value) and not any(c in value for c in '="\\')
        return value if plain else json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return _number_text(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_table(value: Any) -> bool:
    """A list of mappings (e.g. the jobs of the end record): shown one item per line."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _item_text(item: Mapping[str, Any]) -> str:
    # empty values say nothing: left out
    return "  ".join(f"{k}={_field_text(v)}" for k, v in item.items() if v not in ("", None, {}, []))


def format_record_line(data: Mapping[str, Any]) -> Text:
    """A parsed JSON log record, readably: one line (local time, level, [job@host], message,
    ``key=value`` for its scalar fields), then one indented line per item of a list-of-mappings field
    (``jobs:``) and the exception, if any. A string field that the message already says is left out."""
    line = Text()
    stamp = _local_time(data.get("time")) or str(data.get("time", "?"))
    level = str(data.get("level", "?"))
    line.append(stamp, style="dim")
    line.append(" ")
    line.append(f"{level:<8}", style=LEVEL_STYLES.get(level, ""))
    line.append(" ")
    context = context_label(data.get("job"), data.get("host"))
    if context:
        line.append(context, style="cyan")
        line.append(" ")
    message = str(data.get("message", ""))
    line.append(message)
    tables: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in data.items():
        if key in _CORE_KEYS or key == "exception":
            continue
        if isinstance(value, str) and value and value in message:
            continue
        if _is_table(value):
            tables.append((key, value))
            continue
        line.append(f"  {key}=", style="dim")
        line.append(_field_text(value), style="dim")
    for key, items in tables:
        line.append(f"\n    {key}:", style="dim")
        for item in items:
            line.append(f"\n      - {_item_text(item)}", style="dim")
    exception = data.get("exception")
    if exception:
        line.append("\n" + str(exception), style="dim")
    return line


def context_label(job: Any, host: Any) -> str:
    """``[job@host]``, ``[job]``, ``[@host]`` or ``""``."""
    if job and host:
        return f"[{job}@{host}]"
    if job:
        return f"[{job}]"
    if host:
        return f"[@{host}]"
    return ""


def render_log(path: Path, console: Console, min_level: str = "DEBUG", *, as_json: bool = False) -> None:
    """Print a session log, one record at ``min_level`` or above at a time: readably (a line that is
    not a JSON object — a truncated last line, a stray line — is shown as it is), or with ``as_json``
    the records' JSON lines as they are in the file (nothing else: stray lines are left out).

    Lines are never wrapped by pc-switcher: piped or redirected, each record is one line (plus its
    indented detail lines) whatever the width; a terminal wraps long lines itself."""
    threshold = level_number(min_level)
    names = logging.getLevelNamesMapping()
    try:
        handle = path.open("r", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read log {path}: {exc.strerror or exc}", "see `pc-switcher logs`") from exc
    options: dict[str, Any] = {"markup": False, "highlight": False, "emoji": False, "soft_wrap": True}
    last: dict[str, Any] | None = None
    with handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                if not as_json:
                    console.print(Text(line, style="dim"), **options)
                continue
            last = data
            level = names.get(str(data.get("level", "")).upper())
            if isinstance(level, int) and level < threshold:
                continue
            if as_json:
                console.file.write(line + "\n")
            else:
                console.print(format_record_line(data), **options)
    if last is not None and "exit_code" not in last and not as_json:
        # every run's log ends with its outcome (driver.Sync._log_end): this one is running, or was
        # killed (SIGKILL, power loss) before it could say how it ended
        console.print(Text(NO_END, style="dim"), **options)
