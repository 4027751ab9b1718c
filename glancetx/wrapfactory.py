"""
A client factory whose every protocol sits under one of another
factory's, for the connection guards (L{glancetx.netguard},
L{glancetx.headercap}) that watch a connection without being its
protocol.
"""

from typing import Callable

from twisted.internet.protocol import Factory, Protocol


class WrappingFactory(Factory):
    """
    Builds C{wrapped}'s protocols, each put under C{under(protocol)}.
    """

    def __init__(self, wrapped: Factory, under: Callable[[Protocol], Protocol]) -> None:
        self._wrapped = wrapped
        self._under = under

    def doStart(self) -> None:
        self._wrapped.doStart()

    def doStop(self) -> None:
        self._wrapped.doStop()

    def buildProtocol(self, addr):
        proto = self._wrapped.buildProtocol(addr)
        if proto is None:
            return None
        return self._under(proto)
