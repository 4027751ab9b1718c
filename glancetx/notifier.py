"""
Image lifecycle notifications (image.create, image.update, image.upload,
image.send, image.delete).

Payloads are built here from the registry record, which never holds the
location, so a notification cannot leak store credentials.
"""

import datetime
from typing import Any, Dict, List

import attr
from twisted.logger import Logger
from zope.interface import Interface, implementer

from glancetx.registry.registry import ImageRecord


class INotifier(Interface):
    def notify(eventType: str, payload: Dict[str, Any]) -> None:
        """
        Emit one event.  Must not block and must not raise.
        """


def payloadFor(image: ImageRecord) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, value in image.fields().items():
        if isinstance(value, datetime.datetime):
            value = value.strftime("%Y-%m-%dT%H:%M:%S.%f")
        out[name] = value
    out["properties"] = dict(image.properties)
    return out


@implementer(INotifier)
class LoggingNotifier:
    """
    Notifications as log events (the default; enough for a single node).
    """

    log = Logger(namespace="glancetx.notification")

    def notify(self, eventType: str, payload: Dict[str, Any]) -> None:
        self.log.info("{event_type} {image_id}", event_type=eventType,
                      image_id=payload.get("id") or payload.get("image_id"),
                      payload=payload)


@implementer(INotifier)
@attr.s
class CollectingNotifier:
    """
    Keeps every event (tests).
    """

    events: List = attr.ib(factory=list)

    def notify(self, eventType: str, payload: Dict[str, Any]) -> None:
        self.events.append((eventType, payload))


@implementer(INotifier)
@attr.s
class Notifiers:
    """
    Every event to each of several notifiers (Glance takes a list of
    drivers); none at all for the C{noop} driver.
    """

    notifiers: List = attr.ib(factory=list)

    def notify(self, eventType: str, payload: Dict[str, Any]) -> None:
        for n in self.notifiers:
            n.notify(eventType, payload)
