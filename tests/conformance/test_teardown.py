"""A failing test ends its run: teardown is bounded even when the agent ignores cancellation.

pytest runs in a child process on a scratch test that fails while a turn is open in an agent
that swallows every cancellation (what a broken session queue left behind, and what hung the
suite for 600 s), streamed and not, on both stacks: the child must end with the failures
reported. The teardown watchdog, the backstop past those bounds, ends a hung process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The child's whole run: start-up and collection on a busy machine, then four failing tests whose
#: teardown is bounded by a few seconds each. Without the bounds it never ends.
RUN_BOUND = 120.0

SCRATCH = """
import asyncio
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio


class Stubborn:
    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def process_direct(self, **kwargs: Any) -> str:
        self.entered.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass


@pytest.mark.parametrize("stream", [False, True])
async def test_fails_with_a_stubborn_turn_open(serve: Any, stream: bool) -> None:
    agent = Stubborn()
    client = await serve(agent)
    body = {"messages": [{"role": "user", "content": "hi"}], "session_id": "s", "stream": stream}
    turn = asyncio.create_task(client.post("/v1/chat/completions", json=body))
    await agent.entered.wait()
    assert not turn.done()
    pytest.fail("deliberate failure with a turn open")
"""


@pytest.mark.timeout(RUN_BOUND + 30)
def test_a_failing_test_with_a_stubborn_turn_open_ends_its_run(tmp_path: Path) -> None:
    scratch = tmp_path / "test_scratch.py"
    scratch.write_text(SCRATCH)
    # --tb=native: CPython 3.11.7 can fail pytest's own rendering of this scratch file's traceback
    # ("AST constructor recursion depth mismatch"), which would hide the outcome.
    command = [sys.executable, "-m", "pytest", "-q", "--tb=native", "-p", "no:cacheprovider"]
    command += ["-p", "tests.conformance.conftest"]
    command += ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(scratch)]
    started = time.monotonic()
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_BOUND, check=False)
    elapsed = time.monotonic() - started
    output = child.stdout + child.stderr
    assert child.returncode == 1, output
    assert "4 failed" in output, output  # streamed and not, on both stacks
    assert "deliberate failure with a turn open" in output
    assert "ignored their cancellation" in output  # the teardown says what it had to end
    assert "ending the run" not in output, output  # the watchdog did not have to fire
    print(f"the failing run ended in {elapsed:.1f} s")


def test_the_teardown_watchdog_ends_a_hung_process() -> None:
    """The backstop past the bounds: a teardown still running at the limit ends the process."""
    code = (
        "import threading\n"
        "from tests.support.watchdog import teardown_watchdog\n"
        "with teardown_watchdog('scratch::test', 0.2):\n"
        "    threading.Event().wait()\n"
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert child.returncode == 1
    assert "teardown of scratch::test still running after 0.2 s: ending the run" in child.stderr
