from twisted.trial.unittest import SynchronousTestCase

from glancetx.budget import DEFAULT_FLOOR, SharedBudget, fixedShare

MiB = 1024 * 1024


class SharedBudgetTests(SynchronousTestCase):
    def test_splitEvenly(self):
        budget = SharedBudget(total=8 * MiB, floor=1 * MiB)
        a = budget.join()
        self.assertEqual(a.high(), 8 * MiB)
        b = budget.join()
        self.assertEqual((a.high(), b.high()), (4 * MiB, 4 * MiB))
        self.assertEqual(a.low(), 1 * MiB)

    def test_neverBelowFloor(self):
        budget = SharedBudget(total=8 * MiB, floor=1 * MiB)
        shares = [budget.join() for _ in range(64)]
        self.assertEqual({s.high() for s in shares}, {1 * MiB})

    def test_leaveGivesBack(self):
        budget = SharedBudget(total=8 * MiB, floor=1 * MiB)
        a, b = budget.join(), budget.join()
        b.leave()
        b.leave()  # twice is once
        self.assertEqual(budget.holders, 1)
        self.assertEqual(a.high(), 8 * MiB)

    def test_zeroTotalIsFloorOnly(self):
        budget = SharedBudget(total=0, floor=2 * MiB)
        self.assertEqual(budget.join().high(), 2 * MiB)

    def test_fixedShare(self):
        self.assertEqual(fixedShare().high(), DEFAULT_FLOOR)
        self.assertEqual(fixedShare(3 * MiB).high(), 3 * MiB)
