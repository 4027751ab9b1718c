"""
Memory that the uploads in flight may hold, shared among them.

An upload passes through three stages that each stall now and then: the
reactor reading the socket, the MD5 thread losing its core, and the disk
writer waiting on the device queue (C{sync_file_range} blocks when it is
full).  With only a megabyte of slack between them, every such stall
pauses the socket and the whole pipeline waits; with a few megabytes, one
1 GiB upload ran 28% faster (219 -> 281 MiB/s, 7 alternating runs).  But
thirty-two uploads each holding that much would pass the memory target,
so the slack is one budget, split evenly among the stages of every upload
in flight, never below a floor (the per-stage slack before the budget
existed).  6 MiB went as fast as 8 MiB within the noise (253 against 257
MiB/s) and peaked 2.5 MiB lower.
"""

from typing import Optional

MiB = 1024 * 1024

#: The whole budget, and the least any one stage gets however many share it.
DEFAULT_TOTAL = 6 * MiB
DEFAULT_FLOOR = 1 * MiB


class SharedBudget:
    """
    A number of bytes split evenly among whoever has joined.  A total of 0
    gives every holder the floor: nothing shared.
    """

    def __init__(self, total: int = DEFAULT_TOTAL, floor: int = DEFAULT_FLOOR) -> None:
        self.total = total
        self.floor = floor
        self.holders = 0

    def join(self) -> "BudgetShare":
        self.holders += 1
        return BudgetShare(self)

    def _leave(self) -> None:
        self.holders -= 1


class BudgetShare:
    """
    One stage's part of a L{SharedBudget}, until it leaves.  Its size
    changes as others join and leave, so it is asked each time.
    """

    def __init__(self, budget: SharedBudget) -> None:
        self._budget: Optional[SharedBudget] = budget

    def high(self) -> int:
        """
        The bytes this stage may hold before it pushes back.
        """
        b = self._budget
        if b is None:
            return DEFAULT_FLOOR
        return max(b.floor, b.total // max(b.holders, 1))

    def low(self) -> int:
        """
        The level to drain to before taking more again.
        """
        return self.high() // 4

    def leave(self) -> None:
        """
        Give the share back (idempotent).
        """
        b, self._budget = self._budget, None
        if b is not None:
            b._leave()


def fixedShare(size: int = DEFAULT_FLOOR) -> BudgetShare:
    """
    A share of C{size} bytes of nobody else's budget: for stages built
    without one (tests, and stores other than the filesystem).
    """
    return SharedBudget(0, size).join()
