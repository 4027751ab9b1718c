"""
Keep pyOpenSSL out of the process until a TLS connection needs it.

Three modules every twistd glance imports also import pyOpenSSL, and with
it cryptography's Rust extension (about 13 MiB resident, a fifth of the
server's memory budget): C{twisted.internet.posixbase} for C{listenSSL}
and C{connectSSL}, C{twisted.internet.tcp} for C{startTLS}, and
C{twisted.internet.endpoints} (which Klein imports) for TLS endpoints.
glancetx uses none of these.

So twistd glance imports the three with pyOpenSSL hidden, and listens on a
plain TCP port with C{listenTCP} rather than through strports.  Its TLS
clients (S3, Swift, the http store, a RabbitMQ with C{ssl}) wrap their
connections in TLS with L{clientTLS}, which imports the TLS protocol, and
pyOpenSSL with it, when the first TLS connection is made;
C{wrapClientTLS} would find its TLS factory missing.  A port description
that needs more than plain TCP (ssl:, unix:, systemd:) goes to strports,
and then nothing is hidden.
"""

import importlib
import sys
from typing import Optional, Tuple

from twisted.application import internet, service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from glancetx.errors import ConfigError

_HIDDEN = ("OpenSSL",)
_IMPORTED_WITHOUT_TLS = (
    "twisted.internet.posixbase",
    "twisted.internet.tcp",
    "twisted.internet.endpoints",
)


def plainTCP(description: str) -> Optional[Tuple[int, str, int]]:
    """
    The port, interface and backlog of a description that means a plain
    TCP listener (C{9292}, C{tcp:9292:interface=127.0.0.1}), or None for
    anything else, escaped colons included, which strports then parses.
    """
    parts = description.strip().split(":")
    if parts[0] == "tcp":
        parts = parts[1:]
    if not parts:
        return None
    port = parts[0][len("port="):] if parts[0].startswith("port=") else parts[0]
    options = {"interface": "", "backlog": "50"}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in options or "\\" in value:
            return None
        options[key] = value
    if not (port.isdigit() and int(port) <= 65535 and options["backlog"].isdigit()):
        return None
    return int(port), options["interface"], int(options["backlog"])


def importReactorWithoutTLS() -> bool:
    """
    Import the reactor's core modules and the endpoints module with
    pyOpenSSL hidden, unless any of them is already imported (by a reactor
    installed earlier, as trial does).

    @return: whether they were imported here.
    """
    if any(name in sys.modules for name in _IMPORTED_WITHOUT_TLS + _HIDDEN):
        return False
    # None in sys.modules makes an import raise ImportError, which these
    # modules catch to leave out their TLS support.
    for name in _HIDDEN:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        for name in _IMPORTED_WITHOUT_TLS:
            importlib.import_module(name)
    finally:
        for name in _HIDDEN:
            del sys.modules[name]
    return True


@implementer(IStreamClientEndpoint)
class _ClientTLSEndpoint:
    def __init__(self, creator, wrapped: IStreamClientEndpoint) -> None:
        self._creator = creator
        self._wrappedEndpoint = wrapped

    def connect(self, protocolFactory) -> Deferred:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        connecting = self._wrappedEndpoint.connect(
            TLSMemoryBIOFactory(self._creator, True, protocolFactory))
        return connecting.addCallback(lambda tls: tls.wrappedProtocol)


def clientTLS(creator, wrapped: IStreamClientEndpoint) -> IStreamClientEndpoint:
    """
    C{wrapClientTLS}, with the TLS protocol imported on the first connect.

    @param creator: the L{IOpenSSLClientConnectionCreator}, from an
        L{IPolicyForHTTPS} or C{optionsForClientTLS}.
    """
    return _ClientTLSEndpoint(creator, wrapped)


@implementer(IAgentEndpointFactory)
class HTTPEndpoints:
    """
    Endpoints for L{Agent.usingEndpointFactory}, as the Agent's own factory
    makes them (C{HostnameEndpoint}, TLS checked by C{policy} for https),
    with TLS through L{clientTLS}.
    """

    def __init__(self, reactor, policy=None) -> None:
        self._reactor = reactor
        self._policy = policy

    def endpointForURI(self, uri) -> IStreamClientEndpoint:
        from twisted.internet.endpoints import HostnameEndpoint
        from twisted.web.error import SchemeNotSupported

        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported("unsupported scheme: %r" % (uri.scheme,))
        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        if uri.scheme == b"https":
            if self._policy is None:
                from twisted.web.client import BrowserLikePolicyForHTTPS

                self._policy = BrowserLikePolicyForHTTPS()
            endpoint = clientTLS(self._policy.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint


def checkCanListen(description: str) -> None:
    """
    Bind a plain TCP description's address once, before the server
    starts: a port in use or an interface that is not an address of this
    host failed when the port started listening, as a traceback.

    @raise ConfigError: naming --port.
    """
    import socket

    tcp = plainTCP(description)
    if tcp is None or tcp[0] == 0:
        return
    port, interface, _ = tcp
    try:
        infos = socket.getaddrinfo(interface or "0.0.0.0", port, socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        probe = socket.socket(family, kind, proto)
        try:
            # As Twisted's own listener does, so a port left in TIME_WAIT
            # by the last run is not taken for one in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
        finally:
            probe.close()
    except OSError as e:
        raise ConfigError("--port: cannot listen on %s:%d: %s"
                          % (interface or "0.0.0.0", port, e.strerror or e))


def listensBeyondLoopback(description: str) -> bool:
    """
    Does C{description} listen on an address other hosts may reach?  A
    TCP one does unless its interface is loopback; for other kinds (a UNIX
    socket, one systemd passes) this says no.
    """
    import ipaddress

    tcp = plainTCP(description)
    if tcp is not None:
        interface = tcp[1]
    else:
        kind = description.split(":", 1)[0]
        if kind not in ("tcp", "tcp6", "ssl"):
            # A UNIX socket; or a socket systemd made, whose address is
            # not in the description: not said, rather than said wrongly.
            return False
        interface = ""
        for part in description.replace("\\:", "\x00").split(":")[1:]:
            if part.startswith("interface="):
                interface = part[len("interface="):].replace("\x00", ":")
    if interface == "localhost":
        return False
    try:
        address = ipaddress.ip_address(interface)
    except ValueError:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return not (address.is_loopback or (mapped is not None and mapped.is_loopback))


def listeningService(description: str, factory, reactor) -> service.IService:
    """
    The service that listens on C{description} for C{factory}: plain TCP
    through C{listenTCP}, anything else through strports.
    """
    tcp = plainTCP(description)
    if tcp is None:
        from twisted.application import strports

        try:
            return strports.service(description, factory, reactor=reactor)
        except Exception as e:
            # strports' parsers raise what they meet: a TypeError for an
            # IPv6 address whose colons are not escaped, a ValueError, a
            # KeyError.  All say the description is wrong.
            hint = ""
            if isinstance(e, TypeError) and "::" in description:
                hint = ("; escape an IPv6 address's colons, as in"
                        " tcp6:9292:interface=\\:\\:1")
            raise ConfigError("--port: not an endpoint Twisted can listen on: %r (%s: %s)%s"
                              % (description, type(e).__name__, e, hint))
    port, interface, backlog = tcp
    return internet.TCPServer(port, factory, backlog=backlog, interface=interface,
                              reactor=reactor)
