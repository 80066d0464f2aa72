"""held_signal: a SIGTERM held while a worker starts; every other command gets the default back.

Each case runs in a child interpreter, since the default action ends the process."""

from __future__ import annotations

import signal
import subprocess
import sys

_PRELUDE = "import os, signal, time\nfrom postroom import held_signal\n"


def _run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _PRELUDE + body], capture_output=True,
                          text=True, timeout=60)


def test_a_held_sigterm_is_noted_and_the_process_goes_on() -> None:
    done = _run("held_signal.hold()\nprint(held_signal.received())\n"
                "os.kill(os.getpid(), signal.SIGTERM)\nprint(held_signal.received())\n")
    assert (done.returncode, done.stdout.split()) == (0, ["False", "True"])


def test_release_raises_a_held_sigterm_again_so_it_ends_the_process() -> None:
    done = _run("held_signal.hold()\nos.kill(os.getpid(), signal.SIGTERM)\n"
                "print('held', flush=True)\nheld_signal.release()\nprint('alive')\n")
    assert (done.returncode, done.stdout.split()) == (-signal.SIGTERM, ["held"])


def test_after_release_sigterm_has_its_default_action() -> None:
    done = _run("held_signal.hold()\nheld_signal.release()\nprint('released', flush=True)\n"
                "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(5)\nprint('alive')\n")
    assert (done.returncode, done.stdout.split()) == (-signal.SIGTERM, ["released"])


def test_release_without_hold_changes_nothing() -> None:
    done = _run("signal.signal(signal.SIGTERM, lambda *a: print('mine', flush=True))\n"
                "held_signal.release()\nos.kill(os.getpid(), signal.SIGTERM)\nprint('alive')\n")
    assert (done.returncode, done.stdout.split()) == (0, ["mine", "alive"])
