"""Control numbers that must be unique: ST02 within a group, GS06 within an interchange.

X12 makes both envelope errors with codes of their own: a repeated ST02 is
AK5 code 23 ("transaction set control number not unique within the
functional group"), a repeated GS06 is AK9 code 19 ("functional group
control number not unique within interchange", code list 716 from 004050;
earlier lists leave 19 to security, which no partner here uses). The first
use of a number is fine; each later one is the error, so the first set or
group is answered on its merits.
"""

from __future__ import annotations

from ..errors import X12Error
from .model import InterchangeSummary

SET_NOT_UNIQUE = "23"  # AK502
GROUP_NOT_UNIQUE = "19"  # AK905


def mark_repeats(interchange: InterchangeSummary) -> list[X12Error]:
    """Add an error to every set whose ST02 and every group whose GS06 was
    used before in its group or interchange; return the errors added."""
    added: list[X12Error] = []
    groups: set[str] = set()
    for group in interchange.groups:
        if group.control_number in groups:
            err = X12Error(
                f"GS06 {group.control_number!r} is used by an earlier functional group"
                " of this interchange: group control numbers must be unique",
                segment_number=group.segment_number,
                segment_id="GS",
                element=6,
                code=GROUP_NOT_UNIQUE,
            )
            group.errors.append(err)
            added.append(err)
        groups.add(group.control_number)
        sets: set[str] = set()
        for s in group.sets:
            if s.control_number and s.control_number in sets:
                err = X12Error(
                    f"ST02 {s.control_number!r} is used by an earlier transaction set"
                    " of this group: set control numbers must be unique",
                    segment_number=s.segment_number,
                    segment_id="ST",
                    element=2,
                    code=SET_NOT_UNIQUE,
                )
                s.errors.append(err)
                added.append(err)
            sets.add(s.control_number)
    return added
