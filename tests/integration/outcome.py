"""What every run's log must end with (docs/architecture.md, "Logs"): its outcome and exit code.

The last record is ``finished: <outcome>, exit code N`` with the fields ``exit_code``, ``outcome``
and ``jobs``: INFO for a success, WARNING for Ctrl+C/SIGTERM, ERROR for every other failure, and a
failed run has, before it, a WARNING-or-above record naming why — what `pc-switcher logs --last
--level warning` shows.
"""

from __future__ import annotations

from typing import Any

LEVEL_OF_CODE = {0: "INFO", 130: "WARNING", 143: "WARNING"}


def assert_log_ends(records: list[dict[str, Any]], code: int, *why: str) -> dict[str, Any]:
    """The log ends with its outcome and exit ``code``; for a failed run each text of ``why`` is in
    a record at WARNING or above before the end. Returns the end record."""
    assert records, "the run has no log"
    last = records[-1]
    ends = [r for r in records if "exit_code" in r]
    assert ends == [last], f"one end record, the last one: {ends[-3:]} / last {last}"
    message = str(last["message"])
    assert message.startswith("finished: "), last
    assert message.endswith(f", exit code {code}"), last
    assert last["exit_code"] == code, last
    assert last["level"] == LEVEL_OF_CODE.get(code, "ERROR"), last
    assert str(last["outcome"]) in message, last
    assert isinstance(last.get("jobs"), list), last
    shown = [str(r["message"]) for r in records[:-1] if r.get("level") in {"WARNING", "ERROR", "CRITICAL"}]
    for text in why:
        assert any(text in m for m in shown), f"no WARNING+ record with {text!r} before the end: {shown}"
    if code != 0:
        assert shown, "a failed run names why at WARNING or above"
    return last
