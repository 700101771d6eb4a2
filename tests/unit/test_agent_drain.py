"""The agent's ``drain``: the barrier the driver waits for before it shows a job's result. A real
agent process (monitor mode): every progress line written before the command is passed on before
the agent's ``drained`` — also lines written just before it, while the agent sits in its wait."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pcswitcher.remote import agent
from tests.unit.test_agent_flush import _read


def test_drained_comes_after_every_line_written_before(tmp_path: Path) -> None:
    run_id = f"draintest{os.getpid()}"
    argv = [sys.executable, "-I", agent.__file__, "monitor", "--run", run_id, "--timeout", "20"]
    argv += ["--path", str(tmp_path)]
    # unbuffered: select() sees every line (a buffered reader would hide the ones it read ahead)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None
    try:
        deadline = time.monotonic() + 20
        hello = _read(proc, deadline)
        assert hello["t"] == "hello"
        progress = Path(str(hello["run_dir"])) / "progress.jsonl"
        sent = 0
        for round_ in range(5):
            with progress.open("a") as fh:  # written, then the command at once
                for i in range(round_ * 7 + 1):
                    fh.write(json.dumps({"percent": i, "item": f"round {round_} line {i}"}) + "\n")
                    sent += 1
            proc.stdin.write(b"drain\n")
            proc.stdin.flush()
            items: list[str] = []
            while True:
                message = _read(proc, deadline)
                if message["t"] == "drained":
                    break
                if message["t"] == "progress":
                    line = message["line"]
                    assert isinstance(line, dict)
                    items.append(str(line["item"]))
            assert items == [f"round {round_} line {i}" for i in range(round_ * 7 + 1)]
        proc.stdin.write(b"quit\n")
        proc.stdin.flush()
        while (message := _read(proc, deadline))["t"] != "bye":
            assert message["t"] != "progress", message
        assert proc.wait(5) == 0
        assert sent == sum(r * 7 + 1 for r in range(5))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(agent.run_dir(run_id), ignore_errors=True)  # quit removes it; a failure may not
