"""
The twistd plugin's two halves: the options and makeService.
"""

import sys

from glancetx.config import Options  # noqa: F401  (twistd looks it up here)
from glancetx.errors import ConfigError


def makeService(options):
    from glancetx.service import buildService

    try:
        if options.configError is not None:
            raise options.configError
        return buildService(options.config)
    except ConfigError as e:
        sys.stderr.write("twistd glance: %s\n" % (e,))
        raise SystemExit(1)
