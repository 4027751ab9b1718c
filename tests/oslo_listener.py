"""
A consumer of Glance's notifications as Ceilometer is one: oslo.messaging's
own notification listener, run in its own virtualenv (scripts/bootstrap
makes .venv-oslo) by L{tests.test_amqpnotifier}.  Never imported by the
tests themselves.

    python tests/oslo_listener.py TRANSPORT_URL COUNT TIMEOUT

Prints "listening" once it consumes, then one JSON line per notification
(priority, publisher_id, event_type, payload, message_id), and exits after
COUNT of them or TIMEOUT seconds.
"""

import json
import sys
import threading

from oslo_config import cfg
import oslo_messaging


def main() -> None:
    url, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    conf = cfg.ConfigOpts()
    conf([])
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    done = threading.Event()
    lock = threading.Lock()
    seen = []

    class Endpoint:
        def _got(self, priority, publisherId, eventType, payload, metadata):
            with lock:
                seen.append(1)
                print(json.dumps([priority, publisherId, eventType, payload,
                                  metadata.get("message_id")]), flush=True)
                if len(seen) >= count:
                    done.set()

        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            self._got("INFO", publisher_id, event_type, payload, metadata)

        def error(self, ctxt, publisher_id, event_type, payload, metadata):
            self._got("ERROR", publisher_id, event_type, payload, metadata)

    targets = [oslo_messaging.Target(topic="notifications", exchange="glance")]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [Endpoint()], executor="threading")
    listener.start()
    print("listening", flush=True)
    done.wait(timeout)
    listener.stop()
    listener.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
