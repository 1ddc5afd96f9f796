"""The 997 functional acknowledgment (and the 999 implementation
acknowledgment, for 5010) for one received functional group.

Built from the summaries alone (``InterchangeSummary``, ``GroupSummary``), so
the received segments need not be kept. The interchange goes back with sender
and receiver swapped, the received delimiters, ISA12 and GS08 as received, and
control numbers from the caller's counter.

How errors become 997 segments (codes: X12 elements 715-723):

* an error whose ``segment_id`` is ST or SE, or that has no segment number,
  is about the whole set: its code goes into AK5 (AK502-AK506, up to five);
* any other error points at a segment: AK3 (segment id, position in the set
  counting the ST as 1, AK304 its code, or 8 when only elements are wrong)
  and, when ``element`` is set, AK4 (position, code — 7 if none was given —
  and a copy of the bad value from the error's ``value`` attribute, if any);
* the group's own errors (GE counts, control numbers) go into AK905-AK909.

AK5 is A, or R when the set has errors of its own or in ``rejected``. AK9 is
A when every set is accepted, P when some are, R when none are, and E
(accepted, errors noted) when every set is accepted but the GS/GE envelope
itself is wrong — the reader reads such groups leniently.

The 999 (005010X231A1) tells the same truth in the same shape, by the same
code: AK1 and AK2 also echo GS08 and ST03, AK3/AK4/AK5 are named IK3/IK4/IK5
(IK303, the loop id, and IK402, the element's reference number, are left
out: the reader does not know them; no CTX), each code is checked against
the 999's own code list (a code outside it is replaced as an invalid one is
in the 997), and ST03 and GS08 are 005010X231A1. It exists from 5010 on:
``ack_kind`` gives a group of an older version a 997 even when a 999 is
wanted.

The envelope goes back to addresses the partner wrote, so they are checked,
never copied raw (``check_address``): an ISA06 of 20 characters would make a
111-character ISA, a ``~`` inside it a segment of its own. The ISA written is
always 106 characters. The mandatory values the 997 echoes (GS01, GS02, GS03,
GS06, ST01, ST02) must be there. A group that cannot be addressed gets no 997
(``Unaddressable``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..errors import EdiInboxError, X12Error
from .model import Delimiters, GroupSummary, InterchangeSummary, SetSummary
from .reader import usage_codes
from .scan import encode_as_read

_LINE_BREAKS = "\r\n\x85"  # U+0085 is the EBCDIC NL once decoded
_CODE = re.compile("[0-9A-Z]{1,3}")
_SET_LEVEL = ("ST", "SE")
ISA_LENGTH = 106  # "ISA" and 16 fixed-width elements, with their separators
_PRINTABLE = re.compile("[ -~]*")  # the X12 character sets are printable ASCII


class Unaddressable(EdiInboxError):
    """The received envelope cannot be answered: a 997 built from it would not
    be well-formed X12 (a value too long, holding a delimiter, or unprintable;
    a mandatory control value missing)."""


def render(
    segments: Iterable[Sequence[str]], delimiters: Delimiters, eol: str | None = None
) -> str:
    """X12 text: each segment's elements joined by the element separator, then the terminator.

    ``eol`` follows each terminator; by default a newline, unless the
    terminator is itself a line break.
    """
    if eol is None:
        eol = "" if delimiters.segment in _LINE_BREAKS else "\n"
    end = delimiters.segment + eol
    return "".join(delimiters.element.join(seg) + end for seg in segments)


def isa_elements(
    *,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    control_number: int,
    version: str,
    delimiters: Delimiters,
    now: datetime,
    usage: str = "P",
) -> list[str]:
    """An ISA with its fixed widths; ``sender``/``receiver`` are (qualifier, id).

    Raises ``Unaddressable`` unless every value fits its width and holds no
    delimiter, so the ISA is always ``ISA_LENGTH`` characters.
    """
    isa11 = _isa11(version, delimiters)
    banned = _banned(version, delimiters)
    _check("ISA05", sender[0], 2, banned)
    _check("ISA06", sender[1], 15, banned)
    _check("ISA07", receiver[0], 2, banned)
    _check("ISA08", receiver[1], 15, banned)
    _check_version(version)
    _check("ISA15", usage, 1, banned)
    isa = [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        sender[0].ljust(2),
        sender[1].ljust(15),
        receiver[0].ljust(2),
        receiver[1].ljust(15),
        now.strftime("%y%m%d"),
        now.strftime("%H%M"),
        isa11,
        version,
        f"{control_number:09d}",
        "0",
        usage,
        delimiters.component,
    ]
    # The checks above make this hold; an ISA of any other length is never written.
    if len(delimiters.element.join(isa)) + 1 != ISA_LENGTH:
        raise Unaddressable(f"the ISA would not be {ISA_LENGTH} characters long")
    return isa


def _usage(ic: InterchangeSummary) -> str:
    """The answer's ISA15: the interchange's (test answered as test), or P
    for a value that is none in its version (refused itself, TA1 note 020)."""
    return ic.usage if ic.usage in usage_codes(ic.version) else "P"


def check_address(interchange: InterchangeSummary, group: GroupSummary | None = None) -> None:
    """Raise ``Unaddressable`` if the acknowledgment cannot be addressed:
    ISA05/ISA07 (qualifiers) over 2 characters, ISA06/ISA08 (ids) over 15,
    any of them holding a delimiter or a character that is not printable
    ASCII; ISA12 not five digits; ISA15 not one character. ``group``: the
    997 for it (None: a TA1, the interchange alone).

    Nor can a 997 if GS01, GS02, GS03 or GS06, or a set's ST01, is empty or
    over its width: the 997's GS03/GS02, AK101/AK102 and AK201 echo them and
    are mandatory (the partner's translator rejects the whole 997). A set
    whose ST02 cannot be echoed as it is gets no AK2 loop instead."""
    ic = interchange
    d = ic.delimiters
    banned = _banned(ic.version, d)
    _check("ISA05", ic.sender_qualifier, 2, banned)
    _check("ISA06", ic.sender_id, 15, banned)
    _check("ISA07", ic.receiver_qualifier, 2, banned)
    _check("ISA08", ic.receiver_id, 15, banned)
    _check_version(ic.version)
    _check("ISA15", _usage(ic), 1, banned)
    if group is None:
        return
    _check("GS02", group.sender, 15, banned)
    _check("GS03", group.receiver, 15, banned)
    _check_echoed("GS01", group.functional_id, ic, 3)
    _check_echoed("GS02", group.sender, ic, 15)
    _check_echoed("GS03", group.receiver, ic, 15)
    _check_echoed("GS06", group.control_number, ic, 9)
    for s in group.sets:  # (an ST02 that cannot be echoed: no AK2 loop, ``build_ack``)
        _check_echoed(f"the set at segment {s.segment_number}: ST01", s.code, ic, 3)


def echoes(value: str, interchange: InterchangeSummary, limit: int = 9) -> bool:
    """Whether an acknowledgment of ``interchange`` can echo ``value`` as it
    is: not empty, at most ``limit`` characters, printable, and none of the
    delimiters the acknowledgment itself uses (its ISA11 included, which it
    may choose: an altered echo would name another set or group, or none)."""
    banned = _banned(interchange.version, interchange.delimiters)
    return (
        bool(value)
        and len(value) <= limit
        and value.isprintable()
        and not any(c in value for c in banned)
    )


def _check_echoed(name: str, value: str, ic: InterchangeSummary, limit: int) -> None:
    """A value the acknowledgment echoes into a mandatory element must be
    echoed as it is (``echoes``)."""
    if not echoes(value, ic, limit):
        said = "is empty" if not value else f"{_quote(value)} cannot be echoed as it is"
        raise Unaddressable(f"{name} {said}: the acknowledgment would leave it out or alter it")


def _isa11(version: str, d: Delimiters) -> str:
    """ISA11: the repetition separator from 00402 on (one is chosen if none was
    received), else ``U``."""
    if version >= "00402":
        used = (d.element, d.component, d.segment)
        return d.repetition or next(c for c in "^{!|`" if c not in used)
    return "U"


def _banned(version: str, d: Delimiters) -> str:
    """Every delimiter the 997 will use: none may appear inside a value."""
    isa11 = _isa11(version, d)
    return d.element + d.component + d.segment + (isa11 if isa11 != "U" else "")


def _check_version(version: str) -> None:
    if not (len(version) == 5 and version.isascii() and version.isdigit()):
        raise Unaddressable(f"ISA12 {_quote(version)} is not a five-digit version")


def _quote(value: str, limit: int = 40) -> str:
    """A partner's value for a message: repr (control characters escaped), cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _check(name: str, value: str, width: int, banned: str) -> None:
    if len(value) > width:
        raise Unaddressable(f"{name} {_quote(value)} is longer than {width} characters")
    if not _PRINTABLE.fullmatch(value):
        raise Unaddressable(f"{name} {_quote(value)} holds characters that are not printable")
    inside = sorted(set(banned).intersection(value))
    if inside:
        raise Unaddressable(f"{name} {_quote(value)} holds the delimiter {inside[0]!r}")


@dataclass(frozen=True, slots=True)
class SetAnswer:
    """What became of one received set: ``posted`` (now or before: AK5 A, or E
    when ``warnings``), or not (AK5 R, with ``errors`` saying why)."""

    posted: bool
    errors: tuple[X12Error, ...] = ()
    warnings: bool = False


@dataclass(frozen=True, slots=True)
class AckKind:
    """What tells a 997 from a 999: the set's code, the names of the segment,
    element and set response segments, the implementation convention (ST03,
    GS08; None: GS08 as received, no ST03) and the codes each may carry
    (None: any well-formed code)."""

    code: str
    segment_tag: str
    element_tag: str
    set_tag: str
    convention: str | None = None
    segment_codes: frozenset[str] | None = None
    element_codes: frozenset[str] | None = None
    set_codes: frozenset[str] | None = None


ACK_997 = AckKind("997", "AK3", "AK4", "AK5")
# Code lists of 005010X231A1: IK304 (620), IK403 (621), IK502 (618).
ACK_999 = AckKind(
    "999",
    "IK3",
    "IK4",
    "IK5",
    convention="005010X231A1",
    segment_codes=frozenset([*map(str, range(1, 9)), "I4", "I6", "I7", "I8", "I9"]),
    element_codes=frozenset(
        [*map(str, (*range(1, 11), 12, 13)), "I6", "I9", "I10", "I11", "I12", "I13"]
    ),
    set_codes=frozenset([*map(str, (*range(1, 20), *range(23, 28))), "I5", "I6"]),
)


def ack_kind(wanted: str, interchange: InterchangeSummary, group: GroupSummary) -> AckKind:
    """The acknowledgment ``group`` gets when ``wanted`` ("997" or "999") is
    asked for: a 999 only for version 005010 or later (GS08, or ISA12 when GS08
    is missing), a 997 for anything older — the 999 did not exist before 5010."""
    if wanted == "999" and _numeric_version(group.version or interchange.version + "0") >= 5010:
        return ACK_999
    return ACK_997


def build_997(
    interchange: InterchangeSummary,
    group: GroupSummary,
    *,
    control_number: int,
    rejected: dict[str, list[X12Error]] | None = None,
    answers: Mapping[int, SetAnswer] | None = None,
    now: datetime,
) -> bytes:
    """A 997 for ``group``: ``build_ack`` with ``ACK_997`` (a 999: ``build_ack``
    with ``ACK_999``, for 5010 groups: see ``ack_kind``)."""
    return build_ack(
        interchange,
        group,
        kind=ACK_997,
        control_number=control_number,
        rejected=rejected,
        answers=answers,
        now=now,
    )


def is_acknowledgement(group: GroupSummary, code: str) -> bool:
    """A partner's 997 or 999 in a group of acknowledgements (GS01 FA): read,
    never answered (X12: no 997 answers a 997, or two systems would answer
    each other for ever), even beside a set that is answered."""
    return group.functional_id == "FA" and code in ("997", "999")


def build_ack(
    interchange: InterchangeSummary,
    group: GroupSummary,
    *,
    kind: AckKind,
    control_number: int,
    rejected: dict[str, list[X12Error]] | None = None,
    answers: Mapping[int, SetAnswer] | None = None,
    now: datetime,
) -> bytes:
    """A complete ISA..IEA interchange acknowledging ``group`` with a 997 or
    a 999 (``kind``), in the received encoding.

    ``rejected`` maps a set's control number (ST02) to problems found after
    parsing (transform, validation); those sets are rejected like sets with
    structure errors. ``control_number`` gives ISA13, GS06 and ST02.

    ``answers``, when given, is what the application did with each set, by
    ``id()`` of its ``SetSummary``: a set is accepted (A, or E with warnings)
    only if its answer says it was posted, and a set without an answer is
    rejected. So the 997 never accepts what was not posted.
    Raises ``Unaddressable`` (see ``check_address``): no 997 rather than a broken one.
    """
    if not 0 < control_number <= 999_999_999:
        raise ValueError(f"control number {control_number} does not fit ISA13 (1..999999999)")
    check_address(interchange, group)
    rejected = rejected or {}
    d = interchange.delimiters
    # GS08 (AN 1/12) echoed only whole: a longer one (a megabyte, say) would
    # make the acknowledgement invalid, a cut one name another release. The
    # 997 is then written in the interchange's release; the 999's AK103,
    # optional, is left out.
    received = group.version if echoes(group.version, interchange, 12) else ""
    version = received or interchange.version + "0"
    ak1 = ["AK1", _clean(group.functional_id, d, 3), _clean(group.control_number, d, 9)]
    st = ["ST", kind.code, f"{control_number:04d}"]
    if kind.convention is not None:  # the 999 names its convention and echoes GS08
        st.append(kind.convention)
        ak1.append(received)
    body: list[list[str]] = [st, _trim(ak1)]
    accepted = 0
    warned = False
    for s in group.sets:
        if is_acknowledgement(group, s.code):  # received, not judged: no AK2 answers it
            accepted += 1
            continue
        if not echoes(s.control_number, interchange):
            # No AK202 can name it (empty, over 9 characters, a separator or a
            # control character in it: refused, never posted — the reader,
            # ``x12.repeats``): an altered number would name another set, or
            # none. Received, not accepted.
            continue
        errors = list(s.errors) + list(rejected.get(s.control_number, ()))
        answer = None if answers is None else answers.get(id(s), SetAnswer(posted=False))
        if answer is not None:
            errors += answer.errors
            ok = answer.posted and not s.errors
            warned = warned or (ok and answer.warnings)
            body.extend(
                _set_response(s, errors, interchange, kind, ok=ok, warnings=answer.warnings)
            )
            accepted += ok
            continue
        body.extend(_set_response(s, errors, interchange, kind))
        accepted += not errors
    count = len(group.sets)
    status = _group_status(accepted, count, bool(group.errors) or warned)
    included = count if group.included is None else group.included
    if included > _MAX_COUNT:  # GE01 past AK902's six digits (its AK905 says it is wrong)
        included = count
    group_codes = _codes(e.code for e in group.errors)
    body.append(["AK9", status, str(included), str(count), str(accepted), *group_codes])
    body.append(["SE", str(len(body) + 1), f"{control_number:04d}"])
    segments = [
        isa_elements(
            sender=(interchange.receiver_qualifier, interchange.receiver_id),
            receiver=(interchange.sender_qualifier, interchange.sender_id),
            control_number=control_number,
            version=interchange.version,
            delimiters=d,
            now=now,
            usage=_usage(interchange),
        ),
        [
            "GS",
            "FA",
            group.receiver,
            group.sender,
            now.strftime("%Y%m%d" if _numeric_version(version) >= 4010 else "%y%m%d"),
            now.strftime("%H%M"),
            str(control_number),
            "X",
            kind.convention or version,
        ],
        *body,
        ["GE", "1", str(control_number)],
        ["IEA", "1", f"{control_number:09d}"],
    ]
    return encode_as_read(render(segments, d), interchange.encoding)


def _set_response(
    s: SetSummary,
    errors: list[X12Error],
    interchange: InterchangeSummary,
    kind: AckKind,
    *,
    ok: bool | None = None,
    warnings: bool = False,
) -> list[list[str]]:
    """AK2, AK3/AK4 (IK3/IK4) for each segment in error, AK5 (IK5): A or E when
    ``ok``, else R; when ``ok`` is None, A unless there are ``errors``."""
    if ok is None:
        ok = not errors
    d = interchange.delimiters
    ak2 = ["AK2", _clean(s.code, d, 3), s.control_number]  # echoed as is (``build_ack``)
    if kind.convention is not None and echoes(s.convention, interchange, 35):
        ak2.append(s.convention)  # AK203: the set's ST03 if it had one, never a cut copy
    out = [_trim(ak2)]
    set_codes: list[str | None] = []
    # by position and id: a missing segment is told at the position of the one found there
    by_segment: dict[tuple[int, str], list[X12Error]] = {}
    for err in errors:
        if err.segment_id in _SET_LEVEL or err.segment_number is None:
            set_codes.append(err.code)
        else:
            by_segment.setdefault((err.segment_number, err.segment_id or ""), []).append(err)
    for number, segment_id in sorted(by_segment, key=lambda at: at[0]):
        errs = by_segment[number, segment_id]
        position = number - s.segment_number + 1 if s.segment_number else number
        if position > _MAX_COUNT or not _SEGMENT_ID.fullmatch(segment_id):
            # AK302 (N0 1/6) cannot name it, or AK301 (ID 2/3) could only name
            # another id than the one received: no AK3; AK5 R 5 says the set
            # has segments in error, the job's record which.
            continue
        elements = [e for e in errs if e.element is not None][:99]
        segment_code = next(
            (e.code for e in errs if e.element is None and _valid(e.code, kind.segment_codes)),
            None,
        )
        ak3 = [kind.segment_tag, segment_id, str(position), ""]
        ak3.append(segment_code or ("8" if elements else ""))
        out.append(_trim(ak3))
        for e in elements:
            value = _copy(str(getattr(e, "value", None) or ""), d)
            code = e.code if e.code is not None and _valid(e.code, kind.element_codes) else "7"
            out.append(_trim([kind.element_tag, str(e.element), "", code, value]))
    if by_segment and not ok:
        set_codes.append("5")
    if ok:  # accepted with errors noted: AK3/AK4 say what was noted
        out.append([kind.set_tag, "E" if warnings or by_segment else "A"])
    else:
        out.append([kind.set_tag, "R", *_codes(set_codes, kind.set_codes)])
    return out


def _group_status(accepted: int, received: int, envelope_errors: bool) -> str:
    """AK901: A all accepted, E all accepted but GS/GE wrong (or with warnings
    noted), P some, R none — a wrong group none of whose sets could be read
    (its ST run into the GS, say) too: nothing in it was accepted."""
    if accepted == received and (received or not envelope_errors):
        return "E" if envelope_errors else "A"
    return "P" if accepted else "R"


def _valid(code: str | None, allowed: frozenset[str] | None = None) -> bool:
    """A well-formed code, and one of ``allowed`` when there is such a list."""
    if code is None or _CODE.fullmatch(code) is None:
        return False
    return allowed is None or code in allowed


def _codes(codes: Iterable[str | None], allowed: frozenset[str] | None = None) -> list[str]:
    """The valid codes, each once, at most five (AK502-AK506, AK905-AK909)."""
    out: list[str] = []
    for code in codes:
        if _valid(code, allowed) and code not in out:
            out.append(code)  # type: ignore[arg-type]
    return out[:5]


# AK301 (ID 2/3): a segment id as X12 writes them; AK302 and AK902 (N0 1/6).
_SEGMENT_ID = re.compile("[0-9A-Z]{2,3}")
_MAX_COUNT = 999_999


def _clean(value: str, d: Delimiters, limit: int = 99) -> str:
    """A copy of a received value that cannot break the 997: no delimiters, no
    control characters, at most the element's X12 maximum (``limit``; AK1/AK2
    echo control numbers, 9)."""
    for c in (d.element, d.component, d.segment, d.repetition):
        if c:
            value = value.replace(c, "")
    return "".join(c for c in value if c.isprintable())[:limit]


def _copy(value: str, d: Delimiters) -> str:
    """AK404's copy of a bad value: its first 99 characters as received, or
    none (AK404 is optional) if it holds a delimiter or a control character:
    a copy with those taken out would be another value, perhaps a valid one
    (``PO>49`` quoted as ``PO49``)."""
    if _clean(value, d, len(value)) != value:
        return ""
    return value[:99]


def _trim(elements: list[str]) -> list[str]:
    """Drop empty trailing elements (X12 forbids trailing separators)."""
    while elements and elements[-1] == "":
        elements.pop()
    return elements


def _numeric_version(version: str) -> int:
    digits = version[:6]
    return int(digits) if digits.isascii() and digits.isdigit() else 0


# TA1 note codes (X12 element I18) the reader gives interchange errors; a TA1
# carries one, the first error's.
_TA1_NOTE = re.compile("[0-9]{3}")


def ta1_wanted(interchange: InterchangeSummary) -> bool:
    """A TA1 goes back when the interchange envelope is wrong, or ISA14 asks for one."""
    return bool(interchange.errors) or interchange.ack_requested == "1"


def build_ta1(interchange: InterchangeSummary, *, control_number: int, now: datetime) -> bytes:
    """A TA1 interchange acknowledgment for ``interchange``, in an envelope of its own
    (ISA, TA1, IEA with no group), in the received delimiters and encoding.

    TA104 is R when the interchange has errors of its own (ISA/IEA: IEA02 not
    ISA13, a file cut off, a bad count), E when it was read leniently
    (warnings), else A; TA105 the first error's note code (``000``: none).
    Raises ``Unaddressable`` when the envelope cannot be answered."""
    if not 0 < control_number <= 999_999_999:
        raise ValueError(f"control number {control_number} does not fit ISA13 (1..999999999)")
    ic = interchange
    d = ic.delimiters
    note = next((e.code for e in ic.errors if e.code and _TA1_NOTE.fullmatch(e.code)), None)
    if ic.errors:
        code, note = "R", note or "024"  # 024: invalid interchange content
    else:
        code, note = ("E" if ic.warnings else "A"), "000"
    number = ic.control_number
    if number.isascii() and number.isdigit():
        # By its value (zeros before it padding, as in any N0), or no TA1: the
        # last nine digits of a longer one would name another interchange.
        number = number.lstrip("0").rjust(9, "0")
        if len(number) > 9:
            raise Unaddressable(f"ISA13 {_quote(ic.control_number)} is over nine digits")
    else:
        number = "000000000"  # none: an ISA13 that is no number names no interchange
    date = ic.date if len(ic.date) == 6 and ic.date.isdigit() else now.strftime("%y%m%d")
    time = ic.time if len(ic.time) == 4 and ic.time.isdigit() else now.strftime("%H%M")
    segments = [
        isa_elements(
            sender=(ic.receiver_qualifier, ic.receiver_id),
            receiver=(ic.sender_qualifier, ic.sender_id),
            control_number=control_number,
            version=ic.version,
            delimiters=d,
            now=now,
            usage=_usage(ic),
        ),
        ["TA1", number, date, time, code, note],
        ["IEA", "0", f"{control_number:09d}"],
    ]
    return encode_as_read(render(segments, d), ic.encoding)
