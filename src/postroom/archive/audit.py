"""Checking the hash ledger: the chain, its head, and the signed checkpoints.

Used by `postroom archive ledger verify` on the database and by the export check on a JSON Lines
file; both stream the entries once, in `seq` order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from postroom.archive.ledger import GENESIS, Checkpoint, Entry, Fault, check_chain
from postroom.archive.signing import verify_checkpoint

__all__ = ["LedgerReport", "audit"]


@dataclass(frozen=True, slots=True)
class LedgerReport:
    count: int  # entries read
    head: str  # the hash of the last entry read
    fault: Fault | None  # the first broken entry
    head_problem: str | None  # the stored head disagrees with the chain (entries cut off)
    checkpoints_verified: int
    checkpoint_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.fault is None and self.head_problem is None and not self.checkpoint_problems


def audit(entries: Iterable[Entry], *, checkpoints: Sequence[Checkpoint],
          public_key: str | None, stored_head: tuple[int, str] | None = None) -> LedgerReport:
    """Walk the chain once; check the head and every checkpoint against it.

    `public_key` (hex): the key checkpoints must be signed with; None accepts the key each
    checkpoint names (the report says so). `stored_head`: (count, hash) the database keeps.
    """
    wanted = {cp.count for cp in checkpoints}
    at: dict[int, str] = {0: GENESIS}
    fault: Fault | None = None
    count, head = 0, GENESIS
    for seq, digest, problem in check_chain(entries):
        if fault is None and problem is not None:
            fault = problem
        count, head = count + 1, digest
        if seq in wanted:
            at[seq] = digest
    head_problem = None
    if stored_head is not None and stored_head != (count, head):
        head_problem = (f"the chain has {count} entries ending in {head[:16]}..., but the "
                        f"ledger head records {stored_head[0]} ending in "
                        f"{stored_head[1][:16]}...: entries were removed or added")
    problems: list[str] = []
    verified = 0
    for cp in checkpoints:
        key = public_key or cp.public_key
        if not verify_checkpoint(cp, key):
            problems.append(f"checkpoint at {cp.count}: signature does not verify with "
                            f"public key {key[:16]}...")
        elif at.get(cp.count) != cp.head:
            problems.append(f"checkpoint at {cp.count}: the signed head does not match entry "
                            f"{cp.count} of the chain")
        else:
            verified += 1
    return LedgerReport(count, head, fault, head_problem, verified, problems)
