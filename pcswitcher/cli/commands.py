"""The ``pc-switcher`` command line (click).

Every error a user can cause ends as one line ``error: <problem> — <fix>`` on stderr and a
documented exit code (pcswitcher.errors.ExitCode); a traceback only ever goes to the log file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import signal
import sys
import textwrap
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from pcswitcher import __version__, paths
from pcswitcher.errors import ConfigError, ExitCode, JobDefinitionError, PcsError, Terminated, UsageError

if TYPE_CHECKING:
    from pcswitcher.run.ui import Ui

# Importing this module stays cheap (click only): every TAB of shell completion and every --help
# imports it. rich, the UI and the job machinery are imported by the commands that use them.

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
log = logging.getLogger("pcswitcher")


class _Formatter(click.HelpFormatter):
    """click's help formatter, except that a description is wrapped at spaces only: a path such as
    ``/home/me/.config/pc-switcher/config.yml`` stays whole on one line (copyable), however narrow
    the terminal."""

    def write_dl(self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first_col = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        wrapper = textwrap.TextWrapper(
            max(self.width - first_col - 2, 10), break_on_hyphens=False, break_long_words=False
        )
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))
            # a default (a path) is one word, even with spaces in it
            text = re.sub(
                r"\[default: [^\]]*\]", lambda m: m.group(0).replace(" ", "\0"), " ".join(second.split())
            )
            lines = [line.replace("\0", " ") for line in wrapper.wrap(text)] or [""]
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{'':>{first_col + self.current_indent}}{line}\n")


class _Context(click.Context):
    formatter_class = _Formatter


class _Command(click.Command):
    context_class = _Context


class _Group(click.Group):
    context_class = _Context
    command_class = _Command
    group_class = type  # subgroups are _Group too


class _Choice(click.Choice):  # type: ignore[type-arg]
    """A case-insensitive choice whose help and errors show the choices as written."""

    def get_invalid_choice_message(self, value: Any, ctx: click.Context | None) -> str:
        return f"{value!r} is not one of {', '.join(map(str, self.choices))}"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(c) for c in map(str, self.choices) if c.lower().startswith(incomplete.lower())]


class _PathOption(click.Option):
    """An option whose default is a function of the environment (XDG_CONFIG_HOME): the help shows
    the path it resolves to now, not "(dynamic)"."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if callable(self.default):
            extra["default"] = str(self.default())
        return extra


def _ui(*, stderr: bool = False) -> Ui:
    """A new :class:`~pcswitcher.run.ui.Ui` (its display on stderr if ``stderr``)."""
    from pcswitcher.run.ui import Ui

    if stderr:
        from rich.console import Console

        return Ui(Console(stderr=True))
    return Ui()


def _complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from pcswitcher.remote.inventory import load_inventory

    path = Path(ctx.params.get("inventory") or paths.default_inventory_path())
    try:
        hosts = load_inventory(path).hosts()
    except Exception:
        return []
    return [CompletionItem(h) for h in hosts if h.startswith(incomplete)]


def _complete_only(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The discovered jobs, for the last name of ``--only a,b,c`` (the names before it kept)."""
    from pcswitcher.jobs.discovery import discover_jobs

    done, _, last = incomplete.rpartition(",")
    typed = set(done.split(",")) if done else set()
    try:
        names = list(discover_jobs(paths.project_root()))
    except Exception:
        return []
    prefix = f"{done}," if done else ""
    return [CompletionItem(prefix + n) for n in names if n.startswith(last) and n not in typed]


def _split_only(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    names = [n.strip() for item in value for n in item.split(",")]
    if any(not n for n in names):
        raise click.BadParameter("empty job name; write --only JOB[,JOB]")
    return tuple(dict.fromkeys(names))


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=paths.default_config_path,  # resolved when the command runs (XDG_CONFIG_HOME)
    show_default=True,
    cls=_PathOption,
    help="Config file.",
)
INVENTORY_OPTION = click.option(
    "-i",
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    default=paths.default_inventory_path,
    show_default=True,
    cls=_PathOption,
    help="Ansible inventory (INI or YAML).",
)


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="pc-switcher")
def cli() -> None:
    """Sync this workstation onto another one, built on Ansible.

    Exit codes: 0 success; 1 the sync failed or was aborted (a job failed, low disk, lost link,
    unreachable target); 2 bad usage, config or inventory; 3 another sync holds the lock (or the
    target is this machine); 130 interrupted by Ctrl+C; 143 terminated by SIGTERM.
    """


@cli.command(short_help="Sync this machine onto TARGET.", context_settings=CONTEXT)
@click.argument("target", shell_complete=_complete_target)
@CONFIG_OPTION
@INVENTORY_OPTION
@click.option("-n", "--dry-run", is_flag=True, help="Show what every job would change; change nothing.")
@click.option("-y", "--yes", "assume_yes", is_flag=True, help="Answer yes to every question.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (the display goes to stderr)."
)
@click.option("--allow-first-sync", is_flag=True, help="Sync even if the target has never been synced.")
@click.option(
    "--allow-out-of-order",
    is_flag=True,
    help="Sync even if the target last synced with another machine, or this machine already pushed to it.",
)
@click.option(
    "--only",
    multiple=True,
    callback=_split_only,
    shell_complete=_complete_only,
    metavar="JOB[,JOB]",
    help="Run only these enabled jobs (in config order).",
)
def sync(
    *,
    target: str,
    config_path: Path,
    inventory: Path,
    dry_run: bool,
    assume_yes: bool,
    as_json: bool,
    allow_first_sync: bool,
    allow_out_of_order: bool,
    only: tuple[str, ...],
) -> None:
    """Sync this machine onto TARGET (a host of the inventory)."""
    from pcswitcher.run.driver import Sync, SyncOptions, prepare

    options = SyncOptions(
        target=target,
        config_path=config_path,
        inventory_path=inventory,
        dry_run=dry_run,
        assume_yes=assume_yes,
        only=only,
        allow_first_sync=allow_first_sync,
        allow_out_of_order=allow_out_of_order,
    )
    prepared = prepare(options)
    ui = _ui(stderr=as_json)
    run = Sync(options, prepared, ui)
    code = run.run()
    if as_json:
        click.echo(json.dumps(run.result(), indent=2))
    sys.exit(int(code))


@cli.command(short_help="Write a commented config and an example inventory.", context_settings=CONTEXT)
@CONFIG_OPTION
@INVENTORY_OPTION
@click.option(
    "--force", is_flag=True, help="Replace existing files (each old one is kept: *.bak, *.bak.1, …)."
)
def init(config_path: Path, inventory: Path, force: bool) -> None:
    """Write a commented default config and an example inventory.

    With -c and/or -i, only the file(s) named; without either, both at their default paths. All or
    nothing: when one cannot be written, neither is.
    """
    from pcswitcher.config.init_text import default_config_text, example_inventory_text
    from pcswitcher.jobs.discovery import discover_jobs

    config_path, inventory = Path(os.path.abspath(config_path)), Path(os.path.abspath(inventory))
    if config_path == inventory:
        raise UsageError(
            f"-c and -i both name {config_path}", "give the config and the inventory two different paths"
        )
    ctx = click.get_current_context()
    given = {
        name
        for name in ("config_path", "inventory")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    files = {}
    if not given or "config_path" in given:
        files[config_path] = default_config_text(discover_jobs(paths.project_root()))
    if not given or "inventory" in given:
        files[inventory] = example_inventory_text()
    existing = [p for p in files if os.path.lexists(p)]
    if existing and not force:
        raise UsageError(
            f"{existing[0]} already exists",
            "edit it, or run `pc-switcher init --force` to replace it (the old file is kept as a .bak)",
        )
    for path, backup in _install(files):
        click.echo(f"wrote {path}" + (f" (the old one is kept as {backup})" if backup else ""))
    options = "".join(
        f" {flag} {paths.shell_quote(str(path))}"
        for flag, path, default in (
            ("-c", config_path, paths.default_config_path()),
            ("-i", inventory, paths.default_inventory_path()),
        )
        if path != default
    )
    click.echo(f"next: add your target to the inventory, then `pc-switcher sync TARGET{options} --dry-run`")


def _free_backup(path: Path) -> Path:
    """``path.bak``, else the first free ``path.bak.N``: a backup never replaces another."""
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def _install(files: dict[Path, str]) -> list[tuple[Path, Path | None]]:
    """Write ``files`` (making their directories) all or nothing: each new text goes to a temp file, each
    existing file gets a hard link as its backup, then the temp files replace the files. Any
    failure (the directory is a file, read-only, immutable) undoes what was done and raises one
    UsageError naming the file and the reason. Returns each path and its backup (None: new)."""
    done: list[Path] = []  # temp files and backups made, removed again on failure
    replaced: list[tuple[Path, Path | None]] = []
    current = next(iter(files)).parent
    try:
        for path in files:
            current = path.parent
            current.mkdir(parents=True, exist_ok=True)
        staged: list[tuple[Path, Path, Path | None]] = []
        for path, text in files.items():
            current = path
            temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(temp, "x", encoding="utf-8") as file:
                done.append(temp)
                file.write(text)
            backup = _free_backup(path) if os.path.lexists(path) else None
            if backup is not None:
                os.link(path, backup, follow_symlinks=False)  # fails on an immutable file
                done.append(backup)
            staged.append((path, temp, backup))
        for path, temp, backup in staged:
            current = path
            os.replace(temp, path)
            replaced.append((path, backup))
    except OSError as exc:
        _undo(replaced, done)
        raise UsageError(
            f"cannot write {current}: {exc.strerror or exc}",
            f"make {current if current not in files else current.parent} a writable directory "
            "(check `ls -ld` and `lsattr -d`), then run init again",
        ) from None
    return replaced


def _undo(replaced: list[tuple[Path, Path | None]], made: list[Path]) -> None:
    """Put back the files :func:`_install` replaced, and remove what it made, as far as possible."""
    for path, backup in replaced:
        with contextlib.suppress(OSError):
            if backup is None:
                path.unlink()
            else:
                restore = path.with_name(f".{path.name}.restore-{os.getpid()}")
                os.link(backup, restore, follow_symlinks=False)
                os.replace(restore, path)
    for path in made:
        with contextlib.suppress(OSError):
            path.unlink()


@cli.command("logs", short_help="List the session logs, or show one.", context_settings=CONTEXT)
@click.option("--last", is_flag=True, help="Show the newest log.")
@click.option(
    "--level",
    type=_Choice(LEVELS, case_sensitive=False),
    default="DEBUG",
    show_default=True,
    metavar="LEVEL",
    help=f"Lowest level shown: {', '.join(LEVELS)} (any case).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the log's raw JSON-lines records.")
@click.argument("run_id", required=False)
def logs_command(last: bool, level: str, run_id: str | None, as_json: bool) -> None:
    """List the session logs, or show one (RUN_ID or --last)."""
    from rich.console import Console

    from pcswitcher.run import logs

    directory = paths.logs_dir()
    console = Console()
    if run_id or last:
        path = directory / f"{run_id}.jsonl" if run_id else logs.latest_log(directory)
        if path is None or not path.exists():
            raise UsageError(
                f"no log {'for run ' + run_id if run_id else 'yet'} in {directory}",
                "run `pc-switcher logs` to list the logs" if run_id else "run a sync first",
            )
        logs.render_log(path, console, level.upper(), as_json=as_json)
        return
    found = logs.list_logs(directory)
    if as_json:
        for path in found:
            click.echo(json.dumps({"run_id": path.stem, "bytes": path.stat().st_size, "path": str(path)}))
        return
    if not found:
        click.echo(f"no logs yet in {directory}")
        return
    for path in found:
        click.echo(f"{path.stem}  {path.stat().st_size:>9} B  {path}")


@cli.command(short_help="Kill what a run left behind; remove its files.", context_settings=CONTEXT)
@click.argument("target", shell_complete=_complete_target)
@click.option("--run", "run_id", help="The run to clean up [default: the newest run].")
@INVENTORY_OPTION
def cleanup(target: str, run_id: str | None, inventory: Path) -> None:
    """Kill what a run left on TARGET and on this machine, and remove its files."""
    from pcswitcher.run.cleanup import run_cleanup

    sys.exit(int(run_cleanup(target, run_id, inventory, _ui())))


@cli.group("config", short_help="Check the config; print the settings reference.", context_settings=CONTEXT)
def config_group() -> None:
    """Check the config, or print the reference of every setting."""


@config_group.command(
    "check", short_help="Validate the config; list every problem.", context_settings=CONTEXT
)
@CONFIG_OPTION
def config_check(config_path: Path) -> None:
    """Validate the config: exit 0 when valid, else 2 and every problem, one line each
    (``error: FILE:LINE:COL: problem — fix``)."""
    from pcswitcher.config.settings import load_config
    from pcswitcher.jobs.discovery import discover_jobs

    path = config_path
    try:
        config = load_config(path, discover_jobs(paths.project_root()))
    except ConfigError as exc:
        if not exc.problems:
            raise
        ui = _ui()
        for message, hint in exc.problems:
            ui.error(message, hint)
        sys.exit(int(exc.exit_code))
    enabled = ", ".join(j.name for j in config.enabled_jobs()) or "none"
    click.echo(f"{path}: valid; jobs enabled in order: {enabled}")


@config_group.command(
    "reference", short_help="Print the reference of every setting (Markdown).", context_settings=CONTEXT
)
def config_reference() -> None:
    """Print the reference of every setting (Markdown, as docs/configuration.md)."""
    from pcswitcher.config.reference import render
    from pcswitcher.jobs.discovery import discover_jobs

    click.echo(render(discover_jobs(paths.project_root())), nl=False)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from pcswitcher.config.units import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.group(short_help="List or delete the btrfs snapshots of the syncs.", context_settings=CONTEXT)
def snapshots() -> None:
    """The btrfs snapshots pc-switcher takes around each sync (this machine, or TARGET and this one)."""


@snapshots.command("list", short_help="List the snapshot sessions.", context_settings=CONTEXT)
@click.argument("target", required=False, shell_complete=_complete_target)
@CONFIG_OPTION
@INVENTORY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def snapshots_list(target: str | None, config_path: Path, inventory: Path, as_json: bool) -> None:
    """List the snapshot sessions of this machine (and of TARGET when given)."""
    from pcswitcher.cli.snapshots import snapshots_list as run

    code = run(
        target,
        config_path,
        inventory,
        _ui(),
        as_json,
    )
    sys.exit(int(code))


@snapshots.command(
    "cleanup", short_help="Delete old snapshot sessions (never the newest).", context_settings=CONTEXT
)
@click.argument("target", required=False, shell_complete=_complete_target)
@CONFIG_OPTION
@INVENTORY_OPTION
@click.option("--keep", type=int, help="Keep this many newest sessions [default: snapshots.keep].")
@click.option(
    "--older-than", callback=_duration, metavar="AGE", help="Also delete sessions older than AGE (7d, 12h)."
)
@click.option("-n", "--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def snapshots_cleanup(
    *,
    target: str | None,
    config_path: Path,
    inventory: Path,
    keep: int | None,
    older_than: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete old snapshot sessions (never the newest) on this machine (and on TARGET when given)."""
    from pcswitcher.cli.snapshots import snapshots_cleanup as run

    code = run(
        target,
        config_path=config_path,
        inventory_path=inventory,
        keep=keep,
        older_than=older_than,
        dry_run=dry_run,
        ui=_ui(),
        as_json=as_json,
    )
    sys.exit(int(code))


@cli.command(
    "rollback", short_help="Put TARGET back to a session's pre-sync snapshots.", context_settings=CONTEXT
)
@click.argument("target", shell_complete=_complete_target)
@click.option("--session", help="The session to roll back to [default: the newest with pre-sync snapshots].")
@CONFIG_OPTION
@INVENTORY_OPTION
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be rolled back; change nothing.")
@click.option("-y", "--yes", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--quick", is_flag=True, help="Compare files by size and mtime only (no --checksum).")
def rollback_command(
    *,
    target: str,
    session: str | None,
    config_path: Path,
    inventory: Path,
    dry_run: bool,
    assume_yes: bool,
    quick: bool,
) -> None:
    """Put TARGET's synced subvolumes back to a session's pre-sync snapshots (keeps the current state)."""
    from pcswitcher.cli.snapshots import rollback

    code = rollback(
        target,
        session,
        config_path=config_path,
        inventory_path=inventory,
        dry_run=dry_run,
        assume_yes=assume_yes,
        quick=quick,
        ui=_ui(),
    )
    sys.exit(int(code))


@cli.command(short_help="Print the shell completion script.", context_settings=CONTEXT)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script (e.g. `eval "$(pc-switcher completion bash)"`)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "pc-switcher", "_PC_SWITCHER_COMPLETE").source())


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: runs the CLI and turns every error into one line and an exit code."""
    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="pc-switcher", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `pc-switcher`, `pc-switcher config`: the help
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        sys.exit(int(ExitCode.OK))
    except click.exceptions.Abort:
        _ui().error("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "pc-switcher"
        _ui().error(exc.format_message(), f"see `{command} --help`")
        sys.exit(int(ExitCode.USAGE))
    except click.ClickException as exc:
        _ui().error(exc.format_message())
        sys.exit(exc.exit_code)
    except PcsError as exc:
        _ui().error(exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    except JobDefinitionError as exc:
        _ui().error(f"broken job definition: {exc}", "fix the role (see docs/job-contract.md)")
        sys.exit(int(ExitCode.USAGE))
    except (BrokenPipeError, KeyboardInterrupt, Terminated) as exc:
        sys.exit(_interrupted(exc))
    except Exception as exc:
        _internal_error(exc)
        sys.exit(int(ExitCode.FAILED))


def _internal_error(exc: BaseException) -> None:
    """A bug: one line on the terminal, the traceback in a file."""
    crash = paths.state_dir() / "crash.log"
    try:
        crash.parent.mkdir(parents=True, exist_ok=True)
        with crash.open("a") as f:
            f.write("".join(traceback.format_exception(exc)))
        where = str(crash)
    except OSError:
        where = "stderr"
        traceback.print_exception(exc)
    _ui().error(
        f"internal error: {type(exc).__name__}: {exc}", f"please report it; the traceback is in {where}"
    )


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


#: The interrupt that Python ignored (:func:`_unraisable`), to deliver again.
_ignored: list[type[BaseException]] = []


def _unraisable(info: Any) -> None:
    """``sys.unraisablehook``: an interrupt raised where Python ignores exceptions (a signal that
    landed in a weakref callback, e.g. importlib's module-lock cleanup after every import, or in a
    ``__del__``) would print "Exception ignored … Traceback" and be lost: the command would go on.
    Instead it is raised again 1 ms later (SIGALRM, :func:`_deliver_ignored`), in the main flow."""
    if isinstance(info.exc_value, (Terminated, KeyboardInterrupt)):
        _ignored.append(type(info.exc_value))
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    sys.__unraisablehook__(info)


def _deliver_ignored(signum: int, frame: Any) -> None:
    if frame is not None and frame.f_code is _unraisable.__code__:  # still in the hook: a bit later
        signal.setitimer(signal.ITIMER_REAL, 0.001)
    elif _ignored:
        raise _ignored.pop()


def _interrupted(exc: BaseException) -> int:
    """The exit code of a command stopped by SIGTERM (143), else by Ctrl+C or a closed pipe (130)."""
    return int(ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED)


def entry() -> None:
    """The ``pc-switcher`` console script: :func:`main`, then a quick exit.

    SIGTERM first becomes an exception, as Ctrl+C is KeyboardInterrupt: a SIGTERM while a command
    reads its config (before a sync installs its abort path) unwinds it and exits 143, the code
    the docs give, instead of Python's default end by the signal. One that lands where Python
    ignores exceptions is raised again (:func:`_unraisable`).

    By the time main() returns everything is done: the log is closed, the lock released, every
    playbook and agent has ended. Python's own finalization would then free every object of
    Ansible's and the driver's modules one by one — about 0.1 s on a 2-core machine, a tenth of a
    no-op sync's fixed cost. So: flush stdout and stderr, run the exit handlers (Ansible removes its
    local temp files in one), and end the process with the exit code. A signal in these last
    milliseconds is ignored: the command is over (it would raise in an exit handler, a traceback).
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGALRM, _deliver_ignored)
    sys.unraisablehook = _unraisable
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    except (KeyboardInterrupt, Terminated) as exc:  # in the instant main() ended
        code = _interrupted(exc)
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    if isinstance(code, str):  # sys.exit("message"), as Python would print it
        sys.stderr.write(f"{code}\n")
        code = int(ExitCode.FAILED)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    atexit._run_exitfuncs()  # what Python's finalization would run first
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entry()
