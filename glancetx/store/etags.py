"""
What an object store's ETag says of the bytes behind it.

S3 and Swift give a single object's MD5 as its ETag, so a download can be
checked against the image's checksum before its first byte goes out: an
object replaced behind glancetx's back (a stray PUT, a restore from the
wrong backup) is then refused rather than served as the image.  The ETag
of an object made of parts (S3's multipart, C{<md5>-<parts>}; Swift's
large objects, flagged by a header) is a digest of digests, and an object
that S3 encrypts with a key of KMS's or the client's has one that is no
digest of the bytes at all: those say nothing, and are not checked.
"""

import string
from typing import Optional

_HEX = frozenset(string.hexdigits)


def plainMD5(etag: Optional[str]) -> Optional[str]:
    """
    The MD5 (lower-case hex) that C{etag} states, or None where it states
    none.
    """
    if not etag:
        return None
    value = etag.strip()
    if value.startswith("W/"):
        return None
    value = value.strip('"').lower()
    if len(value) == 32 and _HEX.issuperset(value):
        return value
    return None
