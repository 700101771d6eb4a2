"""The runner's events and the agents' progress lines → the run's log and display."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pcswitcher.jobs.registry import Registry
from pcswitcher.jobs.runner import EventHandler, failure_reason
from pcswitcher.run.ui import Ui

log = logging.getLogger("pcswitcher")


def delegated_to_source(delegated: dict[str, Any]) -> bool:
    """A task delegated to this machine (``delegate_to: localhost``): ansible-core 2.19 keeps only
    ``ansible_host``/``_port``/``_user``/``_connection`` of the delegated vars in the result, older
    versions ``ansible_delegated_host`` too; the implicit localhost connects with ``local``."""
    if delegated.get("ansible_connection") == "local":
        return True
    names = {"localhost", "127.0.0.1", "::1"}
    return delegated.get("ansible_delegated_host") in names or delegated.get("ansible_host") in names


@dataclass
class EventLog:
    """Where one run's events go: the log (with job and host), the display, the registry (async
    job ids)."""

    ui: Ui
    registry: Registry
    source: str  # this machine's label
    target: str  # the target's inventory name
    dry_run: bool
    current_job: str | None = None  # the job whose progress lines the agents relay

    def handler(self, job: str | None) -> EventHandler:
        """The event handler of one playbook run (``job``: None for the safety and carry runs)."""
        return lambda event: self.on_event(job, event)

    def _host_of(self, data: dict[str, Any]) -> str:
        res = data.get("res") or {}
        delegated = res.get("_ansible_delegated_vars")
        if isinstance(delegated, dict) and delegated_to_source(delegated):
            return self.source
        return str(data.get("host") or self.target)

    def on_event(self, job: str | None, event: dict[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        task = str(data.get("task") or "")
        extra: dict[str, Any] = {"job": job, "host": self._host_of(data) if data.get("host") else None}
        if kind == "playbook_on_task_start" and job is not None:
            self.ui.progress(job, None, None, task)
            log.debug("task: %s", task, extra=extra)
        elif kind in {"runner_on_ok", "runner_on_async_poll", "runner_on_async_ok"}:
            self._on_ok(kind, data, res, task, extra)
        elif kind == "runner_on_failed":
            level = logging.WARNING if data.get("ignore_errors") else logging.ERROR
            log.log(level, "failed: %s: %s", task, failure_reason(res), extra=extra)
        elif kind == "runner_on_unreachable":
            log.error("unreachable: %s", str(res.get("msg") or "").strip(), extra=extra)
        elif kind == "runner_on_skipped":
            log.debug("skipped: %s", task, extra=extra)
        elif kind == "warning":
            log.warning("%s", str(data.get("warning") or event.get("stdout") or "").strip(), extra=extra)
        elif kind in {"verbose", "deprecated", "error"} and event.get("stdout"):
            # Ansible's own output goes to the log, not to the screen
            log.debug("ansible: %s", str(event["stdout"]).strip(), extra=extra)

    def _on_ok(
        self, kind: str, data: dict[str, Any], res: dict[str, Any], task: str, extra: dict[str, Any]
    ) -> None:
        jid = res.get("ansible_job_id") or data.get("jid")
        if jid:
            self.registry.add_jid(str(extra["host"]), str(jid))
        if kind != "runner_on_ok":
            return
        if res.get("changed"):
            log.info(
                "%s: %s",
                "would change" if self.dry_run else "changed",
                task,
                extra={**extra, "fields": {"task": task, "action": data.get("task_action")}},
            )
        elif data.get("task_action") in {"ansible.builtin.debug", "debug"} and res.get("msg"):
            log.info("%s", res.get("msg"), extra=extra)
        else:
            log.debug("ok: %s", task, extra=extra)

    def on_progress(self, host: str, line: dict[str, Any]) -> None:
        """A progress line of the current job, relayed by an agent: the display, the log."""
        job = self.current_job
        if job is None:
            return
        percent = line.get("percent")
        item = line.get("item")
        if isinstance(percent, int | float) or isinstance(item, str):
            self.ui.progress(
                job,
                host,
                float(percent) if isinstance(percent, int | float) else None,
                item if isinstance(item, str) else None,
            )
        message = line.get("message")
        if isinstance(message, str) and message:
            level = logging.getLevelName(str(line.get("level", "INFO")).upper())
            log.log(
                level if isinstance(level, int) else logging.INFO,
                "%s",
                message,
                extra={"job": job, "host": host},
            )
