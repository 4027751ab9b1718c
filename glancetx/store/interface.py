"""
The contract every image store driver keeps.

Bytes cross this boundary only as producers, never as whole strings: an
upload hands the driver an L{IBodyProducer} that pushes the request body as
it arrives, and a download hands the web layer an L{IBodyProducer} that
pushes the stored bytes.  Whoever calls C{startProducing(consumer)} also
registers the producer on the consumer (the convention twisted.web's Agent
already follows), so the consumer can pause it when it cannot keep up.
"""

import re
from urllib.parse import urlsplit, urlunsplit

import attr
from zope.interface import Attribute, Interface


class StoreError(Exception):
    """
    The store failed for a reason that is not the client's fault.  The web
    layer answers 503 and never shows the message's location part.
    """


class StoreUnavailable(StoreError):
    """
    The store could not be reached or answered 5xx.
    """


class LocationNotFound(StoreError):
    """
    Nothing is stored at the location (a deleted object, a 404 origin).
    """


class BadLocation(ValueError):
    """
    A location URI that no configured store can serve, or that a user may
    not name (C{file://} from a client, for example).
    """


class UploadFailed(Exception):
    """
    The body producer ended badly: the client went away, or the bytes broke
    a size, checksum or cap rule.  Carries the HTTP status the client (if
    still there) should get.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StoredImage:
    """
    What an C{add} leaves behind: where the bytes are and how many there are.
    """

    location: str
    size: int


class IStore(Interface):
    """
    A place image bytes live.  Every method returns a L{Deferred}.
    """

    name = Attribute("The store's configured name: file, http, s3 or swift.")
    schemes = Attribute("The location URI schemes this store serves.")
    writable = Attribute("False for stores that only read (http).")

    def add(image_id, body):
        """
        Store the bytes C{body} produces under C{image_id}.

        @param body: an L{IBodyProducer}; C{body.length} is the declared size
            or C{UNKNOWN_LENGTH}.  Its C{startProducing} Deferred fails (with
            L{UploadFailed}) if the bytes must not be kept.

        @return: Deferred firing with a L{StoredImage} once every byte is
            durably stored, or failing with the body's failure or a
            L{StoreError} after removing whatever partial bytes it wrote.
            Where it could not remove them, the failure's exception has
            C{leftInStore = True}, and C{removeAbandoned(image_id)} is to
            be tried later.
        """

    def get(location):
        """
        @return: Deferred firing with an L{IBodyProducer} whose C{length} is
            the image size and whose C{startProducing} writes exactly that
            many bytes, failing (L{StoreError}) if the store ends early.
            Fails with L{LocationNotFound} if nothing is there.  It may
            have an C{md5} attribute: the bytes' MD5 (lower-case hex) as
            the store states it, or None where it states none.
        """

    def get_size(location):
        """
        @return: Deferred firing with the size in bytes of the stored image.
        """

    def delete(location):
        """
        Remove the bytes at C{location}.  Deleting what is already gone is
        not an error.

        @return: Deferred firing with None.
        """

    def removeAbandoned(image_id, retry=True):
        """
        Remove whatever an upload of C{image_id} left here when its process
        died, or when its own removal after a failure could not finish:
        partial bytes, or whole bytes that never reached the registry.
        Called once the image is killed, so nothing else may write under
        C{image_id} any more.  A store that cannot be reached is tried again
        in the background for a while, or, with C{retry} false, fails with
        L{StoreUnavailable} (the caller tries again later); nothing to
        remove is not an error.

        @return: Deferred firing with None.
        """

    sweptAfterFailure = Attribute(
        "Whether a failed upload may leave parts here that the store's own"
        " removal, retried for a while in memory, may not get to: then the"
        " registry keeps a reminder to remove them later (S3 and Swift).")


def redact(location: str) -> str:
    """
    A location fit for a debug log line: user and password removed.
    """
    try:
        parts = urlsplit(location)
        host = parts.hostname or ""
        if ":" in host:
            host = "[%s]" % (host,)
        if parts.port:
            host = "%s:%d" % (host, parts.port)
    except ValueError:  # a bad IPv6 address, a port that is not a number
        return "<unparseable location>"
    if "@" in parts.path:
        # A password with a "/" in it, not percent-encoded, ends the
        # authority early: "http://user:12/secret@host/x" reads as host
        # "user", port 12, and the rest of the password in the path.
        return "<unparseable location>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


#: What L{withoutLocations} takes for a URL in a text: schemes in any case,
#: and up to the line's last "@" if one follows, since a password may hold
#: a space or a quote that would otherwise end the match inside it.
_URL_IN_TEXT = re.compile(r"([a-z][a-z0-9+.-]*)://(?:[^\n]*@)?[^\s'\"]+", re.IGNORECASE)


def withoutLocations(text: str) -> str:
    """
    C{text} with each URL in it replaced by its scheme alone ("<http
    location>"): fit for a client, a notification or an info log line.
    Without its credentials a location still names the hosts, buckets and
    paths behind the service, which are the operator's; and the client who
    sent one knows it already.
    """
    def one(match) -> str:
        # Punctuation that ends a sentence or a clause after the URL is the
        # text's, not the URL's ("http://h:8080: no answer").
        url = match.group(0)
        trail = len(url) - len(url.rstrip(":,.;!?"))
        return "<%s location>%s" % (match.group(1).lower(), url[len(url) - trail:])
    return _URL_IN_TEXT.sub(one, text)
