"""
Whether this machine's memory, not glancetx, sets the speed of a first
download and of nginx's write to disk.

  python -m bench.pagecache [--gib N] [--file-mib M]

On a virtual machine whose balloon device reports free pages to the host
(virtio-balloon's REPORTING feature), the host takes back the memory under
every page the guest has freed for a while, and backs it again only when
the guest next writes to it.  A page used for the first time since then
costs several microseconds, and a page the guest freed a moment ago costs
next to nothing.  Everything that fills new page cache pays this: nginx
writing an upload through the cache, and the first read of an image that
glancetx wrote around the cache (O_DIRECT).  So the same command runs at a
fifth of its speed or at full speed depending on which pages the kernel
hands out, which no server controls.

This prints:
  1. whether the balloon device reports free pages;
  2. the rate at which fresh private memory is faulted in, a GiB at a
     time, and held, until a GiB runs at under half the first ones' rate
     or N GiB: where the host has taken memory back, that GiB runs at its
     price;
  3. a file written around the cache, read into new cache pages while that
     memory is held (so the kernel's recently freed pages are taken), then
     from the cache, then evicted and read into the pages just freed.  The
     same file and disk: only the pages differ.
"""

import argparse
import glob
import mmap
import os
import time

from bench.common import GiB, MiB, benchDir, setCached, writeDirect

_BALLOON = 0x0005
_F_REPORTING = 5


def freePageReporting() -> str:
    """
    'on', 'off', or 'no balloon', from the virtio devices' feature bits
    (one character per bit, bit 0 first).
    """
    for dev in glob.glob("/sys/bus/virtio/devices/*"):
        try:
            with open(dev + "/device") as f:
                if int(f.read(), 16) != _BALLOON:
                    continue
            with open(dev + "/features") as f:
                bits = f.read().strip()
        except (OSError, ValueError):
            continue
        return "on" if len(bits) > _F_REPORTING and bits[_F_REPORTING] == "1" else "off"
    return "no balloon"


def faultIn(maxGib: int):
    """
    Fault in fresh private memory a GiB at a time, one byte a page, and
    keep it: until a GiB runs at under half the fastest one's rate (the
    pages the host still backed are used up) or C{maxGib} is reached.
    The mapping and MiB/s for each GiB.
    """
    m = mmap.mmap(-1, maxGib * GiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    one = b"\x01"
    rates = []
    for g in range(maxGib):
        start = time.monotonic()
        for off in range(g * GiB, (g + 1) * GiB, mmap.PAGESIZE):
            m[off:off + 1] = one
        rates.append(1024 / (time.monotonic() - start))
        if rates[-1] < max(rates) / 2:
            break
    return m, rates


def _readAll(path: str, size: int) -> float:
    buf = bytearray(MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.monotonic()
        while os.readv(fd, [buf]):
            pass
        return size / MiB / (time.monotonic() - start)
    finally:
        os.close(fd)


def measure(gib: int, size: int) -> dict:
    """
    Fault in up to C{gib} GiB and hold it, so that the pages the kernel
    freed last (the ones the host still backs) are ours; read a new file
    into the cache meanwhile; then free our memory and read the file again
    into the pages just freed.
    """
    path = os.path.join(benchDir("data"), "pagecache-%d" % (os.getpid(),))
    writeDirect(path, size)
    try:
        held, rates = faultIn(gib)
        try:
            first = _readAll(path, size)
            cached = _readAll(path, size)
        finally:
            held.close()
        again = []
        for _ in range(2):
            setCached(path, False)
            again.append(_readAll(path, size))
    finally:
        os.unlink(path)
    return dict(faultIn=rates, first=first, cached=cached, again=again)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pagecache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=int, default=8,
                   help="at most this many GiB of fresh memory to fault in")
    p.add_argument("--file-mib", type=int, default=1024, help="size of the file read")
    args = p.parse_args(argv)
    print("virtio-balloon free page reporting: %s" % (freePageReporting(),))
    r = measure(args.gib, args.file_mib * MiB)
    print("fresh memory faulted in and held, MiB/s for each GiB: %s"
          % (", ".join("%.0f" % x for x in r["faultIn"]),))
    print("a %d MiB file written around the cache, then read:" % (args.file_mib,))
    print("  into new cache pages, that memory held: %6.0f MiB/s" % (r["first"],))
    print("  from the cache:                         %6.0f MiB/s" % (r["cached"],))
    print("  evicted, into the pages just freed:     %s MiB/s"
          % (", ".join("%6.0f" % x for x in r["again"]),))


if __name__ == "__main__":
    main()
