import subprocess
import sys

from twisted.trial.unittest import TestCase

# Sixteen 256 KiB socket reads in flight, freed oldest first, as an upload
# holds them; counts the page faults of 2,000 more.
_CHILD = """
import collections, resource, sys
if sys.argv[1] == "tuned":
    from glancetx.service import tuneMalloc
    tuneMalloc()
q = collections.deque(b"\\1" * (256 * 1024) for _ in range(16))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2000):
    q.append(b"\\1" * (256 * 1024))
    q.popleft()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True,
                         capture_output=True, text=True).stdout
    return int(out)


class TuneMallocTests(TestCase):
    def test_readsReuseTheirPages(self):
        """
        With the allocator tuned, a stream of 256 KiB chunks reuses pages
        that are already mapped instead of faulting each one in again.
        """
        if not sys.platform.startswith("linux"):
            raise self.skipTest("glibc only")
        tuned, untuned = faults("tuned"), faults("untuned")
        self.assertLess(tuned, 300)
        self.assertGreater(untuned, tuned)
