"""The shapes X12 is read into: delimiters, segments, and envelope summaries.

Pure data: no I/O. The reader (``x12.reader``) fills these in; ``orders``
reads 850s from ``TransactionSet``; the 997 writer (``x12.ack``) works from
the summaries alone, so a file's segments need not stay in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count, repeat
from typing import NamedTuple, overload

from ..errors import X12Error


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The four separators an ISA declares.

    ``repetition`` is ``None`` before version 00402, or where ISA11 holds the
    letter ``U`` (or another alphanumeric) instead of a separator.
    """

    element: str = "*"
    component: str = ">"
    segment: str = "~"
    repetition: str | None = None


class Segment(NamedTuple):
    """One segment. ``elements[0]`` is the tag; ``elements[3]`` of a BEG is BEG03.

    ``number`` is the 1-based position counted from the interchange's ISA.
    """

    elements: list[str]
    number: int

    @property
    def tag(self) -> str:
        return self.elements[0]

    def get(self, index: int, default: str = "") -> str:
        """Element ``index`` (1-based, as X12 names them), or ``default`` if absent."""
        elements = self.elements
        return elements[index] if index < len(elements) else default

    def components(self, index: int, delimiters: Delimiters) -> list[str]:
        """Element ``index`` split on the component separator."""
        return self.get(index).split(delimiters.component)


class SetSegments(Sequence[Segment]):
    """A transaction set's segments, kept as their texts and split when read.

    A ``Segment`` costs ~340 bytes even for "N9*1" (a list, its strings, a
    tuple); its text ~60. The reader keeps every set of a file until the
    pipeline is done with it, so 10 MB of 2 million tiny segments took 681 MB
    as ``Segment``s. The segments of a set are numbered consecutively from
    ``first`` (the ST's number).
    """

    __slots__ = ("first", "separator", "texts")

    def __init__(self, texts: list[str], first: int, separator: str) -> None:
        self.texts = texts
        self.first = first
        self.separator = separator

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Segment: ...
    @overload
    def __getitem__(self, index: slice) -> list[Segment]: ...
    def __getitem__(self, index: int | slice) -> Segment | list[Segment]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.texts)))]
        text = self.texts[index]  # raises IndexError as a list does
        number = self.first + (index if index >= 0 else len(self.texts) + index)
        return Segment(text.split(self.separator), number)

    def __iter__(self) -> Iterator[Segment]:
        return map(
            _new,
            repeat(Segment),
            zip(map(str.split, self.texts, repeat(self.separator)), count(self.first)),
        )

    def __repr__(self) -> str:
        return f"SetSegments({len(self.texts)} segments from {self.first})"


_new = tuple.__new__  # builds a Segment without the NamedTuple's Python-level __new__


@dataclass(slots=True)
class TransactionSet:
    """One ST..SE, with its segments (ST and SE included) and its problems.

    ``errors`` holds what is wrong with the set's own structure (SE01 count,
    SE02 control number, a missing SE); an empty list means well-formed.
    """

    code: str  # ST01, e.g. "850"
    control_number: str  # ST02
    segments: Sequence[Segment]  # a SetSegments from the reader; a list will do
    delimiters: Delimiters
    interchange: InterchangeSummary
    group: GroupSummary
    errors: list[X12Error] = field(default_factory=list)
    summary: SetSummary | None = None  # the reader's record of it (shares ``errors``)


@dataclass(slots=True)
class SetSummary:
    """What the 997 needs of a transaction set once its segments are gone."""

    code: str
    control_number: str
    errors: list[X12Error] = field(default_factory=list)
    segment_number: int = 0  # of the ST, counted from the ISA (AK302 positions count from it)
    convention: str = ""  # ST03 (5010 on): the implementation convention, echoed in a 999's AK203


@dataclass(slots=True)
class GroupSummary:
    """A functional group (GS..GE) as far as it has been read."""

    functional_id: str  # GS01, e.g. "PO"
    sender: str  # GS02
    receiver: str  # GS03
    control_number: str  # GS06
    version: str  # GS08, e.g. "004010"
    segment_number: int  # of the GS
    sets: list[SetSummary] = field(default_factory=list)
    errors: list[X12Error] = field(default_factory=list)  # GE problems
    included: int | None = None  # GE01 as sent (AK902); None until a numeric GE01 is read


@dataclass(slots=True)
class InterchangeSummary:
    """An interchange (ISA..IEA) as far as it has been read."""

    sender_qualifier: str  # ISA05
    sender_id: str  # ISA06, trailing padding removed
    receiver_qualifier: str  # ISA07
    receiver_id: str  # ISA08, trailing padding removed
    date: str  # ISA09 YYMMDD
    time: str  # ISA10 HHMM
    version: str  # ISA12
    control_number: str  # ISA13
    usage: str  # ISA15: P production, T test
    delimiters: Delimiters
    # What the bytes were decoded with: "ascii", "utf-8", "cp1252" (its five
    # gaps as latin-1), "cp500" (EBCDIC).
    encoding: str
    groups: list[GroupSummary] = field(default_factory=list)
    errors: list[X12Error] = field(default_factory=list)  # ISA/IEA problems
    # What was read leniently but is not as the standard says (NBSP padding, a
    # missing ISA16, an unpadded IEA02, no terminator at the end): not errors.
    warnings: list[X12Error] = field(default_factory=list)
    ack_requested: str = ""  # ISA14: "1" asks for a TA1
    ta1s: int = 0  # TA1 acknowledgments it carries (between ISA and the first GS)
