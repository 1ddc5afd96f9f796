"""Partner data on a terminal: shown, never obeyed.

A PO number or vendor name is whatever the partner's file says. Printed raw,
an ESC (``\\x1b[2J``, an OSC 8 link, a title change), a C1 control (U+009B is
a CSI to many terminals), a carriage return or a bidi override (U+202E)
would act on the operator's terminal instead of being read. ``shown`` writes
every character that is not printable as a Python-style escape (``\\x1b``,
``\\u202e``); printable text, accents included, is left alone.

``json_text`` is ``json.dumps`` made as safe: with ``ensure_ascii=False``,
JSON escapes only U+0000-U+001F, so DEL, the C1 controls and the other
non-printables are escaped here (``\\u009b``). Undecodable file names
(lone surrogates) come out as ``\\udcXX`` escapes instead of failing to print.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Not printable (str.isprintable): Unicode "Other" (Cc, Cf, Cs, Co, Cn) and
# "Separator" (Zl, Zp, Zs) except the ASCII space.
_UNPRINTABLE = re.compile(r"[^ -~]")  # candidates; isprintable decides


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: object) -> str:
    """``text`` (or ``str(text)``) with every non-printable character escaped.

    >>> shown("PO\\x1b[31m1")
    'PO\\\\x1b[31m1'
    """
    value = "" if text is None else str(text)
    return _UNPRINTABLE.sub(lambda m: m[0] if m[0].isprintable() else _escape(m[0]), value)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells astral characters as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(value: Any, **kwargs: Any) -> str:
    """JSON for a terminal or a pipe: as ``json.dumps(value, ensure_ascii=False,
    **kwargs)``, with every non-printable character escaped.

    Outside strings, JSON holds only printable ASCII and the indentation's
    newlines; inside them, ``json.dumps`` has escaped newlines already, so each
    raw newline left is layout and stays.
    """
    text = json.dumps(value, ensure_ascii=False, **kwargs)

    def fix(m: re.Match[str]) -> str:
        char = m[0]
        return char if char == "\n" or char.isprintable() else _json_escape(char)

    return _UNPRINTABLE.sub(fix, text)
