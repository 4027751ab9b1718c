"""
Uploads whose process died end as killed images, as failed uploads do.

A process that dies in the middle of an upload (killed, crashed, its
machine lost) cannot kill its image.  In Glance such an image stays in
C{saving} until somebody deletes it, and clients polling for it to become
C{active} wait for ever.  Here every upload holds a lease on its image in
the registry, taken with the change to C{saving} and ended with the change
out of it.  The process pushes its leases forward while it lives; any
process sharing the registry kills an image whose lease ran out, and has
the upload's store remove the bytes it left.

A lease is a time in the registry, written by one process's clock and read
by another's: the clocks of processes that share a database must agree to
well within the lease.
"""

import datetime
import uuid
from typing import Any, Callable, Set

import attr

from glancetx.asyncutil import fromCoroutine
from glancetx.registry.registry import UploadLease

#: Seconds an upload's image stays C{saving} after its process stops renewing.
DEFAULT_LEASE_SECONDS = 300


@attr.s(auto_attribs=True)
class UploadLeases:
    """
    This process's leases: taken and ended with its uploads' status changes,
    renewed together in one statement every third of a lease.
    """

    registry: Any
    #: The lease's length in seconds.
    seconds: float = DEFAULT_LEASE_SECONDS
    #: This process's name in the registry; a new one every start.
    holder: str = attr.ib(factory=lambda: uuid.uuid4().hex)
    #: The time leases are written and read in (UTC, as the registry's).
    now: Callable[[], datetime.datetime] = datetime.datetime.utcnow
    _held: Set[str] = attr.ib(factory=set, init=False)

    @property
    def interval(self) -> float:
        """
        How often to renew, and to look for expired leases: a lease survives
        two missed renewals, and an abandoned upload is killed at most a
        third of a lease after its lease ran out.
        """
        return self.seconds / 3.0

    def take(self, imageId: str, store: str) -> UploadLease:
        """
        The lease to write with C{imageId}'s change to C{saving}, its bytes
        going to C{store}.  Once that change is made, L{hold} it.
        """
        return UploadLease(imageId, self.holder, self._expiry(), store)

    def hold(self, imageId: str) -> None:
        """
        This process renews C{imageId}'s lease from now on, until
        L{release}.  Only the upload that moved the image to C{saving}
        holds it: another upload of the same image, in this process, that
        lost that race must not release it.
        """
        self._held.add(imageId)

    def release(self, imageId: str) -> None:
        self._held.discard(imageId)

    @property
    def held(self) -> int:
        return len(self._held)

    @fromCoroutine
    async def renew(self) -> None:
        if self._held:
            await self.registry.renewUploads(self.holder, self._expiry())

    def _expiry(self) -> datetime.datetime:
        return self.now() + datetime.timedelta(seconds=self.seconds)
