"""edi-inbox: the inbound X12 850 daemon."""

__version__ = "0.1.0"
