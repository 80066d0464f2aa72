"""Shift the wall clock of every Python process in a test run (CI's date-shifted run).

CI puts this folder on PYTHONPATH and sets TEST_CLOCK_SHIFT_DAYS: Python then imports this
module at start-up, in pytest and in every `python -m postroom` process the tests spawn (they
inherit the environment; the variable has no POSTROOM_ prefix, which the tests strip from their
workers' environment), so all of them see the same shifted `time.time()` and `datetime.now()`,
while monotonic time, sleeps and timeouts keep their meaning. A test that puts a fixed calendar
date next to the real clock fails under it. (libfaketime was tried first: with monotonic time
shifted, threading waits hang; without, time.sleep fails with EINVAL.)

The shifted clock is read once here, at start-up: time_machine anchors a ticking clock to the
real time of its first reading, so a process forked before any reading (a child of
multiprocessing's fork server, app/children.py) would anchor on its own first reading and run
behind by the server's age, minutes into a test run.
"""

import os

_days = os.environ.get("TEST_CLOCK_SHIFT_DAYS", "")
if _days:
    import time
    from datetime import UTC, datetime, timedelta

    import time_machine

    _travel = time_machine.travel(datetime.now(UTC) + timedelta(days=int(_days)), tick=True)
    _travel.start()
    time.time()  # anchors the ticking clock now, for this process and all it forks
