"""
Builds the remote stores (http, s3, swift) the configuration names, each
with its own persistent HTTP connection pool.
"""

from typing import Dict


def makeRemoteStores(config, reactor) -> Dict[str, object]:
    stores: Dict[str, object] = {}
    return stores
