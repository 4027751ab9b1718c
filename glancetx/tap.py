"""
The twistd plugin's two halves: the options and makeService.
"""

import sys

from glancetx.config import Options  # noqa: F401  (twistd looks it up here)
from glancetx.errors import ConfigError


def makeService(options):
    try:
        if options.configError is not None:
            raise options.configError
        from glancetx.lazytls import importReactorWithoutTLS, plainTCP

        if plainTCP(options.config.port) is not None:
            importReactorWithoutTLS()
        from glancetx.service import buildService

        return buildService(options.config)
    except ConfigError as e:
        sys.stderr.write("twistd glance: %s\n" % (e,))
        raise SystemExit(1)
