"""A playbook run through :class:`pcswitcher.jobs.runner.PlaybookRun` on this host, over Ansible's local
connection: the scaffolding of the tests of the runner itself (test_gate, test_runner_config)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pcswitcher.jobs.runner import PlaybookResult, PlaybookRun, prepare_bin_dir, standard_envvars

INVENTORY = (
    "all:\n  hosts:\n    here:\n      ansible_connection: local\n"
    "      ansible_python_interpreter: /usr/bin/python3\n"
)


def local_run(
    tmp: Path,
    playbook: Path,
    *,
    project_dir: Path,
    ident: str,
    extravars: dict[str, Any] | None = None,
    roles_path: Path | None = None,
    run_dir: Path | None = None,
    **kwargs: Any,
) -> PlaybookRun:
    """A run (not started) of ``playbook`` on the host ``here``, with the environment every run of
    pc-switcher gets; its inventory, bin dir, temp and private data dirs live in ``tmp``.
    ``kwargs`` go to :class:`PlaybookRun` (``tags``, ...)."""
    inventory = tmp / "inventory.yml"
    if not inventory.exists():
        inventory.write_text(INVENTORY)
    env = standard_envvars(
        project_dir=project_dir,
        bin_dir=prepare_bin_dir(tmp / "bin"),
        control_path=None,
        run_dir=None if run_dir is None else str(run_dir),
        local_tmp=tmp / "tmp",
        ssh_keepalive=1,
    )
    if roles_path is not None:
        env["ANSIBLE_ROLES_PATH"] = str(roles_path)
    return PlaybookRun(
        playbook,
        project_dir=project_dir,
        private_data_dir=tmp / f"pdd-{time.monotonic_ns()}",
        ident=ident,
        inventory=inventory,
        limit="here",
        extravars=extravars or {},
        envvars=env,
        **kwargs,
    )


def finish(run: PlaybookRun, timeout: float = 60) -> PlaybookResult:
    """Wait for a started run to end; its result."""
    assert run.join(timeout), "the run did not end"
    run.scrub()
    return run.result()
