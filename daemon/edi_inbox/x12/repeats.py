"""Control numbers that must be unique — ST02 within a group, GS06 within an
interchange, as translators read numbers — and ST02s a 997 must echo as
they are written (``ack.echoes``).

X12 makes both envelope errors with codes of their own: a repeated ST02 is
AK5 code 23 ("transaction set control number not unique within the
functional group"), a repeated GS06 is AK9 code 19 ("functional group
control number not unique within interchange", code list 716 from 004050;
earlier lists leave 19 to security, which no partner here uses). The first
use of a number is fine; each later one is the error, so the first set or
group is answered on its merits. An ST02 holding a separator (the 997's
own repetition separator too) or a control character is AK5 code 7
("missing or invalid transaction set control number"): its set is never
posted, and no AK2 loop answers it.
"""

from __future__ import annotations

from ..errors import X12Error
from .ack import echoes
from .model import InterchangeSummary

SET_NOT_UNIQUE = "23"  # AK502
SET_NUMBER_INVALID = "7"  # AK502: missing or invalid transaction set control number
GROUP_NOT_UNIQUE = "19"  # AK905


def mark_repeats(interchange: InterchangeSummary) -> list[X12Error]:
    """Add an error to every set whose ST02 and every group whose GS06 was
    used before in its group or interchange — as a translator reads numbers:
    ``077`` is group 77, ``00001`` and ``0001 `` are set 0001 — and to every
    set whose ST02 the 997 cannot echo as it is (``ack.echoes``: a separator
    or a control character in it; the reader has said so of one missing or
    too long); return the errors added."""
    added: list[X12Error] = []

    def note(errors: list[X12Error], message: str, number: int, tag: str, code: str) -> None:
        element = 6 if tag == "GS" else 2
        err = X12Error(message, segment_number=number, segment_id=tag, element=element, code=code)
        errors.append(err)
        added.append(err)

    groups: dict[str, str] = {}  # number as read -> as written first
    for group in interchange.groups:
        gs06 = group.control_number
        first = groups.get(_read(gs06))
        groups.setdefault(_read(gs06), gs06)
        if first is not None:
            said = f"GS06 {gs06!r} is used by an earlier functional group{_written(first, gs06)}"
            note(group.errors, said + " of this interchange: group control numbers must be"
                 " unique", group.segment_number, "GS", GROUP_NOT_UNIQUE)  # fmt: skip
        sets: dict[str, str] = {}
        for s in group.sets:
            st02 = s.control_number
            if not st02:
                continue
            if len(st02) <= 9 and not echoes(st02, interchange):
                said = f"ST02 {st02!r} holds a separator or a control character: no 997"
                note(s.errors, said + " can name this set", s.segment_number, "ST",
                     SET_NUMBER_INVALID)  # fmt: skip
            first = sets.get(_read(st02))
            sets.setdefault(_read(st02), st02)
            if first is not None:
                said = f"ST02 {st02!r} is used by an earlier transaction set{_written(first, st02)}"
                note(s.errors, said + " of this group: set control numbers must be unique",
                     s.segment_number, "ST", SET_NOT_UNIQUE)  # fmt: skip
    return added


def _read(number: str) -> str:
    """A control number as a translator matches it: spaces and leading zeros
    do not count."""
    return number.strip(" ").lstrip("0") or "0"


def _written(first: str, number: str) -> str:
    return "" if first == number else f" (written {first!r})"
