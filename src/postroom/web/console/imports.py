"""Recipient imports started from the console: they run in the background while the page
follows them (rows written so far, then the importer's per-row report).

A job belongs to the session that started it; no other session can see it. Jobs stay in the
server's memory (a restart forgets them; the rows already written stay written), at most
`MAX_JOBS`, the oldest finished ones dropped first.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from postroom.errors import InputError, PostroomError
from postroom.recipients.importer import ImportReport

__all__ = ["MAX_JOBS", "ImportJob", "ImportJobs"]

log = logging.getLogger(__name__)

MAX_JOBS = 100


@dataclass
class ImportJob:
    id: str
    owner: str  # the session that started it
    filename: str
    written: int = 0  # good rows written so far
    report: ImportReport | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.report is not None or self.error is not None

    def advance(self, rows: int) -> None:
        """The importer's progress callback (called from its thread, once per batch)."""
        self.written += rows


class ImportJobs:
    def __init__(self) -> None:
        self._jobs: dict[str, ImportJob] = {}

    def start(self, owner: str, filename: str, folder: Path,
              run: Callable[[ImportJob], Awaitable[ImportReport]]) -> ImportJob:
        """A job importing what `run` imports; `folder` (the spooled upload) is removed when
        it ends. Refused when MAX_JOBS are running."""
        if len(self._jobs) >= MAX_JOBS:
            finished = [job for job in self._jobs.values() if job.done]
            if not finished:
                raise InputError(f"{MAX_JOBS} imports are running; try again when one ends")
            del self._jobs[finished[0].id]
        job = ImportJob(secrets.token_urlsafe(16), owner, filename)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, folder, run))
        return job

    def get(self, job_id: str, owner: str) -> ImportJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    @staticmethod
    async def _run(job: ImportJob, folder: Path,
                   run: Callable[[ImportJob], Awaitable[ImportReport]]) -> None:
        try:
            job.report = await run(job)
        except PostroomError as exc:  # refused by the service: its message, as a page would
            job.error = str(exc)
        except Exception as exc:  # nobody awaits this task: say it here, and on the page
            log.exception("the console's import of %r failed", job.filename)
            job.error = f"the import failed ({type(exc).__name__}); see the server's log"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._jobs)
