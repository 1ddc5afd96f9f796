"""edi-inbox: the inbound X12 850 daemon."""

import codecs

__version__ = "0.1.0"

# Every codec a job may use, looked up once at import: ``codecs.lookup``
# remembers a lookup that failed as an unknown encoding for the process's
# life, and the first lookup imports the codec's module, which fails when no
# descriptor is free for a moment ("Too many open files"). Looked up lazily,
# one such moment made every later ERP call fail with "unknown encoding:
# idna" (the socket's host name) and every cp1252 file with "unknown
# encoding: cp1252" until a restart (outsider round 38).
for _name in ("idna", "punycode", "cp1252", "cp500", "latin-1", "unicode_escape"):
    codecs.lookup(_name)
del _name
