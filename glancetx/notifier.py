"""
Image lifecycle notifications (image.create, image.update, image.prepare,
image.upload, image.activate, image.send, image.delete), and, as Glance
sends them, an ERROR-priority image.upload whose payload is the message
when an upload fails.

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
    def notify(eventType: str, payload: Any, priority: str = "INFO") -> None:
        """
        Emit one event (C{priority} INFO or ERROR).  Must not block and
        must not raise.
        """


def payloadFor(image: ImageRecord) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, value in image.fields().items():
        if isinstance(value, datetime.datetime):
            value = value.strftime("%Y-%m-%dT%H:%M:%S.%f")
        out[name] = value
    out["size"] = image.shownSize()
    out["properties"] = dict(image.properties)
    return out


@implementer(INotifier)
class LoggingNotifier:
    """
    Notifications as log events (the default; enough for a single node).
    """

    log = Logger(namespace="glancetx.notification")

    def notify(self, eventType: str, payload: Any, priority: str = "INFO") -> None:
        if priority != "INFO":
            self.log.warn("{event_type} {priority}: {payload}", event_type=eventType,
                          priority=priority, payload=payload)
            return
        self.log.info("{event_type} {image_id}", event_type=eventType,
                      image_id=payload.get("id") or payload.get("image_id"),
                      payload=payload)


@implementer(INotifier)
@attr.s
class CollectingNotifier:
    """
    Keeps every event (tests): INFO ones in C{events}, others in
    C{errors}, each as (event type, payload).
    """

    events: List = attr.ib(factory=list)
    errors: List = attr.ib(factory=list)

    def notify(self, eventType: str, payload: Any, priority: str = "INFO") -> None:
        (self.events if priority == "INFO" else self.errors).append((eventType, payload))


@implementer(INotifier)
@attr.s
class Notifiers:
    """
    Every event to each of several notifiers (Glance takes a list of
    drivers); none at all for the C{noop} driver.
    """

    notifiers: List = attr.ib(factory=list)

    def notify(self, eventType: str, payload: Any, priority: str = "INFO") -> None:
        for n in self.notifiers:
            n.notify(eventType, payload, priority)
