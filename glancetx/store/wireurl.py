"""
URLs handed to treq in the form they go on the wire.

treq calls C{to_uri()} on every URL it is given, and hyperlink's puts the
host through IDNA even when it is an IPv6 address (C{[2001:db8::1]}), which
IDNA refuses: every request to such a host failed before it was sent.
Twisted's agent itself connects to IPv6 addresses, so a URL whose host is
one goes to treq already made a URI, as a L{WireURL}, whose C{to_uri()}
leaves it be.
"""

from typing import Union

from hyperlink import EncodedURL


class WireURL(EncodedURL):
    """
    A URL already in its wire form.
    """

    def to_uri(self) -> "WireURL":
        return self


def asURI(url: EncodedURL) -> EncodedURL:
    """
    C{url} as a URI: the host name through IDNA, the path and query
    percent-encoded; an IPv6 address as it is, in brackets.

    @raise ValueError: a host name IDNA cannot encode.
    """
    if ":" not in url.host:
        return url.to_uri()
    # hyperlink checked the address when it parsed the URL.
    return url.replace(host="").to_uri().replace(host=url.host)


def forTreq(url: str) -> Union[str, WireURL]:
    """
    C{url}, a URL the S3 and Swift stores built (or Swift's auth gave
    them), as treq should be given it: as it is, unless its host is an IPv6
    address.
    """
    if "[" not in url:
        return url
    return WireURL.from_text(asURI(EncodedURL.from_text(url)).to_text())
