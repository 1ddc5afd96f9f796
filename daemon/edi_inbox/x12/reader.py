"""Reading X12 envelopes: segments in, one checked ``TransactionSet`` at a time out.

``X12Reader`` takes the segments ``x12.scan.SegmentScanner`` cuts from the
stream and checks the envelopes — ISA/IEA, GS/GE, ST/SE counts, control
numbers and nesting — yielding one ``TransactionSet`` at a time. Problems a
997 can report are collected (``errors`` of the set, group or interchange,
and ``X12Reader.errors``); what leaves no sensible reading raises.

Control numbers: ISA13/IEA02 and GS06/GE02 are numbers, so "3438" matches
"000003438" (real partners send it unpadded; an unpadded IEA02 gets a
warning); ST02/SE02 are text and must be equal.

Error codes: set-level errors carry AK5 codes (segment id ST/SE), group-level
ones AK9 codes (GS/GE), segment errors AK3 codes, interchange-level ones the
three-digit TA1 note codes (ISA/IEA), which a 997 cannot carry. Warnings
(``X12Reader.warnings``, ``InterchangeSummary.warnings``) are readings that
were lenient, not errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import chain, compress, count, islice, repeat
from operator import not_
from typing import BinaryIO

from ..errors import MAX_ERRORS_LISTED, TooLarge, TruncatedError, X12Error, shorten
from .model import (
    GroupSummary,
    InterchangeSummary,
    Segment,
    SetSegments,
    SetSummary,
    TransactionSet,
)
from .scan import CHUNK_SIZE, SegmentScanner, digits
from .scan import number as count_of
from .values import is_time, parse_date

# What one file may hold ([daemon] max_groups_per_file, max_sets_per_file).
# Past a limit the file is refused whole (``TooLarge``), as soon as it is
# seen: 5,000 empty groups give one failure, not 5,000 997s.
MAX_GROUPS = 100
MAX_SETS = 50_000
# Segments per file ([daemon] max_segments_per_file): a 64 MB file of ordinary
# orders has ~2 million. Each segment kept costs ~60 bytes as text
# (SetSegments) and each one an order is read from ~1 KB downstream (the
# order, its JSON): this caps both, whatever the segments' size.
MAX_SEGMENTS = 2_500_000
_ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1)  # ISA01..ISA15
# The ISA's coded elements: position, its codes, what it is, TA105's note.
# The ID qualifiers (I05) are every version's codes together: one a later
# version added is no reason to refuse an older interchange.
_QUALIFIERS = (
    *(f"{n:02d}" for n in range(1, 39) if n not in (5, 6)),
    *("AM", "NR", "SA", "SN", "ZZ"),
)
_ISA_CODES = (
    (1, ("00", "01", "02", "03", "04", "05", "06"), "an authorization qualifier", "010"),
    (3, ("00", "01"), "a security information qualifier", "012"),
    (5, _QUALIFIERS, "an interchange ID qualifier", "005"),
    (7, _QUALIFIERS, "an interchange ID qualifier", "007"),
    (14, ("0", "1"), "an acknowledgment request", "019"),
)


def usage_codes(version: str) -> tuple[str, ...]:
    """ISA15's codes (I14) in an interchange of ISA12 ``version``: I
    (information) from 00401, P and T before."""
    return ("P", "T") if digits(version) and version < "00401" else ("I", "P", "T")


def _version_codes(version: str) -> tuple[tuple[int, tuple[str, ...], str, str], ...]:
    """The ISA's coded elements whose codes depend on ISA12: ISA11 is the
    standards identifier ``U`` (I10) before 00402, the repetition separator
    from it; ISA15 ``usage_codes``."""
    usage = (15, usage_codes(version), "a usage indicator", "020")
    if digits(version) and version < "00402":
        return ((11, ("U",), "a standards identifier", "016"), usage)
    return (usage,)


_TAG = re.compile("[A-Z][A-Z0-9]{1,2}")
# The data IDs the hot path tests each segment for (``str.startswith``, ~2 ns
# each): an 850 uses a dozen or two. Past this many, a file of thousands of
# IDs would cost more per segment than it saves; the rest take the slow way.
MAX_PREFIXES = 32
_Handler = Callable[[Segment], "TransactionSet | None"]


def _same_number(a: str, b: str) -> bool:
    """Control numbers agree: equal, or equal as numbers (``3438`` and ``000003438``)."""
    return a == b or (digits(a) and digits(b) and a.lstrip("0") == b.lstrip("0"))


class X12Reader:
    """Envelope-checked reading: ``for ts in X12Reader(stream).transaction_sets(): ...``.

    After the iteration, ``interchanges`` holds the summaries (groups, sets,
    errors, warnings; no segments), ``errors`` every X12Error found and
    ``warnings`` every leniency, in file order. Fatal problems raise: not X12,
    a broken ISA, and a file that ends before its trailers (TruncatedError,
    raised after the sets completed before the cut were yielded).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_groups: int = MAX_GROUPS,
        max_sets: int = MAX_SETS,
        max_errors: int = MAX_ERRORS_LISTED,
        max_segments: int = MAX_SEGMENTS,
    ) -> None:
        self.scanner = SegmentScanner(stream, chunk_size)
        self.max_groups, self.max_sets, self.max_errors = max_groups, max_sets, max_errors
        self.max_segments = max_segments
        self._groups = self._sets = 0  # in the whole file
        self.interchanges: list[InterchangeSummary] = []
        self.errors: list[X12Error] = []
        self.warnings: list[X12Error] = []
        self._ic: InterchangeSummary | None = None
        self._group: GroupSummary | None = None
        self._set: SetSummary | None = None
        self._segs: list[str] | None = None  # the open set's segment texts
        self._first = 0  # the number of the open set's ST
        self._data: set[str] = set()  # segment IDs seen and found valid, envelopes aside
        self._quiet = False  # a stray segment was reported; stay quiet until the next control
        self._handlers: dict[str, _Handler] = {
            "ISA": self._on_isa,
            "IEA": self._on_iea,
            "GS": self._on_gs,
            "GE": self._on_ge,
            "ST": self._on_st,
            "SE": self._on_se,
        }

    def transaction_sets(self) -> Iterator[TransactionSet]:
        """Each transaction set, ST to SE, as soon as its SE (or a sign of its end) is read."""
        scanner, dispatch, data = self.scanner, self._dispatch, self._data
        prefixes: tuple[str, ...] = ()  # IDs in ``data`` (MAX_PREFIXES), each + the separator
        made_for = ""  # the element separator ``prefixes`` end with
        last, total = "", 0
        try:
            for first, texts in scanner.pieces():
                total += len(texts)
                if total > self.max_segments:
                    self._too_large(
                        f"more than {self.max_segments} segments",
                        first,
                        f"max_segments_per_file = {self.max_segments}",
                    )
                elem, start, end = scanner.element_separator, 0, len(texts)
                # The hot path: all but ~2 segments per order are data of an ID seen
                # before. One pass in C (``str.startswith`` of the known IDs) finds the
                # others — envelopes, strays, new IDs — and the runs of data between
                # them go to the open set whole, as texts (SetSegments), unsplit. A new
                # ID starts a new pass (at most MAX_PREFIXES times), so that its next
                # segments take the fast way too.
                while start < end:
                    if made_for != elem or len(prefixes) < min(len(data), MAX_PREFIXES):
                        prefixes = tuple(tag + elem for tag in islice(data, MAX_PREFIXES))
                        made_for = elem
                    known = map(str.startswith, islice(texts, start, None), repeat(prefixes))
                    for i in chain(compress(count(start), map(not_, known)), (end,)):
                        if i > start:
                            self._take(texts[start:i], first + start, elem)
                        start = i + 1
                        if i == end:
                            break
                        done = dispatch(Segment(texts[i].split(elem), first + i))
                        if done is not None:
                            yield done
                        if len(prefixes) < min(len(data), MAX_PREFIXES):
                            break
                if texts:
                    last = texts[-1]
            self._finish(last.split(scanner.element_separator)[0] if last else None)
        except X12Error as err:  # the fatal ones: keep .errors complete
            if not any(e is err for e in self.errors):
                self.errors.append(err)
            raise

    def _take(self, texts: list[str], first: int, elem: str) -> None:
        """Segments of IDs known to be valid data: the open set's, or strays if none is open."""
        if self._segs is not None:
            self._segs += texts
            return
        for number, text in enumerate(texts, first):
            self._stray(Segment(text.split(elem), number))

    def _dispatch(self, seg: Segment) -> TransactionSet | None:
        """Every segment but data inside a set: envelopes, strays, IDs not seen before."""
        els = seg[0]
        handler = self._handlers.get(els[0])
        if handler is None:
            handler = self._learn(els)
            if handler is None:  # a valid data segment
                if self._segs is not None:
                    self._keep(seg)
                else:
                    self._stray(seg)
                return None
        return handler(seg)

    def _keep(self, seg: Segment) -> None:
        """Add ``seg`` to the open set, as text (``_learn`` may have mended its ID)."""
        assert self._segs is not None and self._ic is not None
        self._segs.append(self._ic.delimiters.element.join(seg[0]))

    # -- bookkeeping -----------------------------------------------------------------

    def _error(
        self,
        where: list[X12Error],
        message: str,
        seg: Segment | int,
        *,
        segment_id: str | None = None,
        element: int | None = None,
        code: str | None = None,
        cls: type[X12Error] = X12Error,
    ) -> X12Error:
        number = seg if isinstance(seg, int) else seg.number
        sid = segment_id or (None if isinstance(seg, int) else seg.tag)
        if len(self.errors) >= self.max_errors and cls is X12Error:
            self._too_large(f"more than {self.max_errors} errors", number)
        err = cls(message, segment_number=number, segment_id=sid, element=element, code=code)
        where.append(err)
        self.errors.append(err)
        return err

    def _too_large(self, what: str, number: int, limit: str = "") -> None:
        """Refuse the whole file: it holds ``what``, past a limit."""
        setting = f" ([daemon] {limit})" if limit else ""
        err = TooLarge(
            f"the file holds {what}{setting}: refused whole, no 997 is sent",
            segment_number=number,
        )
        self.errors.append(err)
        raise err

    def _warn(self, message: str, seg: Segment, element: int | None = None) -> None:
        assert self._ic is not None
        warning = X12Error(message, segment_number=seg.number, segment_id=seg.tag, element=element)
        self._ic.warnings.append(warning)
        self.warnings.append(warning)

    def _drain_warnings(self) -> None:
        if self.scanner.warnings and self._ic is not None:
            self._ic.warnings.extend(self.scanner.warnings)
            self.warnings.extend(self.scanner.warnings)
            self.scanner.warnings.clear()

    def _interchange(self, seg: Segment) -> InterchangeSummary:
        """The open interchange; a segment after its IEA (not an ISA) is fatal."""
        if self._ic is None:
            raise X12Error(
                f"segment {seg.tag} comes after the IEA, outside any interchange",
                segment_number=seg.number,
                segment_id=seg.tag,
                code="022",
            )
        return self._ic

    def _close_set(self, seg: Segment | None = None) -> TransactionSet | None:
        """Hand out the open set; ``seg`` is what came where its SE should have been."""
        s, segs = self._set, self._segs
        if s is None or segs is None or self._ic is None or self._group is None:
            return None
        if seg is not None:
            self._error(
                s.errors,
                f"transaction set {s.code} {s.control_number} (ST at segment"
                f" {s.segment_number}) has no SE: segment {seg.number} is {seg.tag}",
                seg,
                segment_id="SE",
                code="2",
            )
        self._set = self._segs = None
        d = self._ic.delimiters
        segments = SetSegments(segs, self._first, d.element)
        return TransactionSet(
            s.code, s.control_number, segments, d, self._ic, self._group, s.errors, s
        )

    def _close_group(self, seg: Segment) -> None:
        """Record that the open group has no GE (``seg`` came instead)."""
        g = self._group
        if g is not None:
            self._error(
                g.errors,
                f"functional group {g.control_number} (GS at segment {g.segment_number})"
                f" has no GE: segment {seg.number} is {seg.tag}",
                seg,
                segment_id="GE",
                code="3",
            )
            self._group = None

    # -- envelope segments -------------------------------------------------------------

    def _on_isa(self, seg: Segment) -> TransactionSet | None:
        done = None
        if self._ic is not None:  # the scanner met an ISA before this interchange's IEA
            instead = Segment(["ISA"], self.scanner.previous_count + 1)
            done = self._close_set(instead)
            self._close_group(instead)
            self._error(
                self._ic.errors,
                f"interchange {self._ic.control_number} has no IEA: a new ISA follows",
                instead,
                segment_id="IEA",
                code="023",
            )
            self._ic.encoding = self.scanner.previous_encoding
        els = seg.elements + [""] * (17 - len(seg.elements))  # the scanner gives 17
        assert self.scanner.delimiters is not None
        ic = InterchangeSummary(
            sender_qualifier=els[5],
            sender_id=els[6].rstrip(" "),
            receiver_qualifier=els[7],
            receiver_id=els[8].rstrip(" "),
            date=els[9],
            time=els[10],
            version=els[12],
            control_number=els[13],
            usage=els[15],
            delimiters=self.scanner.delimiters,
            encoding=self.scanner.encoding,
            ack_requested=els[14],
        )
        self.interchanges.append(ic)
        self._ic, self._quiet = ic, False
        if len(self.interchanges) > self.max_groups:  # each holds a group at least
            self._too_large(
                f"more than {self.max_groups} interchanges (each holds a functional group)",
                seg.number,
                f"max_groups_per_file = {self.max_groups}",
            )
        self._drain_warnings()
        for i, width in enumerate(_ISA_WIDTHS, 1):
            if len(els[i]) != width:
                self._warn(f"ISA{i:02d} {shorten(els[i])} is not {width} characters long", seg, i)
        if not digits(ic.control_number):
            self._error(ic.errors, "ISA13 is not a number", seg, element=13, code="018")
        for i, allowed, what, note in (*_ISA_CODES, *_version_codes(ic.version)):
            if els[i] not in allowed:
                self._error(
                    ic.errors,
                    f"ISA{i:02d} {shorten(els[i])} is not {what} ({', '.join(allowed)})",
                    seg,
                    element=i,
                    code=note,
                )
        if len(ic.date) != 6 or parse_date(ic.date) is None:
            self._error(
                ic.errors,
                f"ISA09 {shorten(ic.date)} is not a date (YYMMDD)",
                seg,
                element=9,
                code="014",
            )
        if len(ic.time) != 4 or not is_time(ic.time):
            self._error(
                ic.errors,
                f"ISA10 {shorten(ic.time)} is not a time (HHMM)",
                seg,
                element=10,
                code="015",
            )
        if not (digits(ic.version) and len(ic.version) == 5):
            self._error(ic.errors, "ISA12 is not a version number", seg, element=12, code="017")
        return done

    def _on_iea(self, seg: Segment) -> TransactionSet | None:
        ic = self._interchange(seg)
        done = self._close_set(seg)
        self._close_group(seg)
        self._quiet = False
        n, count, number = len(ic.groups), seg.get(1), seg.get(2)
        if self.scanner.unterminated and not _same_number(number, ic.control_number):
            self._ic = None
            raise self._error(
                ic.errors,
                f"the file ends inside the IEA segment (IEA02 {shorten(number)},"
                f" ISA13 {shorten(ic.control_number)}): truncated",
                seg,
                code="023",
                cls=TruncatedError,
            )
        if count_of(count) != n:
            self._error(
                ic.errors,
                f"IEA01 says {shorten(count)} functional groups, the interchange has {n}",
                seg,
                element=1,
                code="021",
            )
        if not _same_number(number, ic.control_number):
            self._error(
                ic.errors,
                f"IEA02 {shorten(number)} does not match ISA13 {shorten(ic.control_number)}",
                seg,
                element=2,
                code="001",
            )
        elif number != ic.control_number:
            self._warn(
                f"IEA02 {shorten(number)} is not written like ISA13 {shorten(ic.control_number)};"
                " accepted as the same number",
                seg,
                2,
            )
        if not ic.groups and not ic.ta1s:
            self._warn("the interchange holds no functional group", seg)
        ic.encoding = self.scanner.encoding
        self._drain_warnings()
        self._ic = None
        return done

    def _on_gs(self, seg: Segment) -> TransactionSet | None:
        ic = self._interchange(seg)
        done = self._close_set(seg)
        self._close_group(seg)
        self._quiet = False
        self._groups += 1
        if self._groups > self.max_groups:
            self._too_large(
                f"more than {self.max_groups} functional groups",
                seg.number,
                f"max_groups_per_file = {self.max_groups}",
            )
        if len(seg.elements) < 9:
            self._error(
                ic.errors,
                f"GS has {len(seg.elements) - 1} elements, 8 are required",
                seg,
                code="024",
            )
        g = GroupSummary(
            functional_id=seg.get(1),
            sender=seg.get(2),
            receiver=seg.get(3),
            control_number=seg.get(6),
            version=seg.get(8),
            segment_number=seg.number,
        )
        for element, value in ((2, g.sender), (3, g.receiver)):
            if len(value) > 15:  # GS02, GS03: AN 2/15, a part of each order's identity
                self._error(
                    g.errors,
                    f"GS{element:02d} {shorten(value)} is {len(value)} characters long; "
                    "the standard allows at most 15",
                    seg,
                    element=element,
                )
        if not digits(g.control_number) or len(g.control_number) > 9:  # GS06 is N0 1/9
            self._error(
                g.errors,
                f"GS06 {shorten(g.control_number)} is not a group control number (1 to 9 digits)",
                seg,
                element=6,
                code="6",
            )
        ic.groups.append(g)
        self._group = g
        return done

    def _on_ge(self, seg: Segment) -> TransactionSet | None:
        ic = self._interchange(seg)
        done = self._close_set(seg)
        g, self._quiet = self._group, False
        if g is None:
            self._error(ic.errors, "GE without a GS", seg, code="022")
            return done
        count, number, n = seg.get(1), seg.get(2), len(g.sets)
        included = count_of(count)
        if included is not None:
            g.included = included
        if g.included != n:
            self._error(
                g.errors,
                f"GE01 says {shorten(count)} transaction sets, the group has {n}",
                seg,
                element=1,
                code="5",
            )
        if not _same_number(number, g.control_number):
            self._error(
                g.errors,
                f"GE02 {shorten(number)} does not match GS06 {shorten(g.control_number)}",
                seg,
                element=2,
                code="4",
            )
        self._group = None
        return done

    def _on_st(self, seg: Segment) -> TransactionSet | None:
        ic = self._interchange(seg)
        done = self._close_set(seg) if self._set is not None else None
        self._quiet = False
        if self._group is None:
            self._error(ic.errors, "ST outside a functional group", seg, code="022")
            self._quiet = True  # its segments are skipped without a word each
            return done
        self._sets += 1
        if self._sets > self.max_sets:
            self._too_large(
                f"more than {self.max_sets} transaction sets",
                seg.number,
                f"max_sets_per_file = {self.max_sets}",
            )
        els = seg[0]
        s = SetSummary(els[1] if len(els) > 1 else "", els[2] if len(els) > 2 else "", [], seg[1])
        if len(els) > 3:
            s.convention = els[3]
        if not (len(s.code) == 3 and s.code.isalnum()):
            self._error(
                s.errors,
                f"ST01 {shorten(s.code)} is not a transaction set code",
                seg,
                element=1,
                code="6",
            )
        if not s.control_number:
            self._error(s.errors, "ST02 (control number) is missing", seg, element=2, code="7")
        elif len(s.control_number) > 9:  # ST02 is AN 4/9
            self._error(
                s.errors,
                f"ST02 is {len(s.control_number)} characters long, over its maximum of 9:"
                f" {shorten(s.control_number)}",
                seg,
                element=2,
                code="7",
            )
        self._group.sets.append(s)
        self._set, self._segs, self._first = s, [], seg.number
        self._keep(seg)
        return done

    def _on_se(self, seg: Segment) -> TransactionSet | None:
        s, segs = self._set, self._segs
        if s is None or segs is None:
            self._stray(seg)
            return None
        self._keep(seg)
        els, n = seg[0], len(segs)
        count, number = els[1] if len(els) > 1 else "", els[2] if len(els) > 2 else ""
        if count != str(n) and count_of(count) != n:
            self._error(
                s.errors,
                f"SE01 says {shorten(count)} segments, the set has {n}",
                seg,
                element=1,
                code="4",
            )
        if number != s.control_number:
            self._error(
                s.errors,
                f"SE02 {shorten(number)} does not match ST02 {shorten(s.control_number)}",
                seg,
                element=2,
                code="3",
            )
        return self._close_set()

    # -- everything else ---------------------------------------------------------------

    def _learn(self, els: list[str]) -> _Handler | None:
        """Classify a segment ID that is no envelope: None (valid data ID) or a handler.

        Valid IDs are remembered in ``_data``. Indentation the scanner did not
        expect is removed here (``els[0]`` is fixed in place), so it costs
        nothing in files without it.
        """
        tag = els[0]
        if tag in self._data:
            return None
        stripped = tag.lstrip(" \t")
        if stripped != tag:
            els[0] = stripped
            handler = self._handlers.get(stripped)
            if handler is not None or stripped in self._data:
                return handler
        if _TAG.fullmatch(stripped):
            self._data.add(stripped)
            return None
        return self._on_bad_tag

    def _on_bad_tag(self, seg: Segment) -> None:
        """A segment whose ID is not 2-3 upper-case letters or digits (AK3 code 1)."""
        if self._segs is None:
            self._stray(seg)
        else:
            self._keep(seg)
            self._bad_tag(seg)

    def _bad_tag(self, seg: Segment) -> None:
        assert self._set is not None
        self._error(
            self._set.errors,
            f"{shorten(seg.tag)} is not a segment ID (2-3 upper-case letters and digits)",
            seg,
            code="1",
        )

    def _stray(self, seg: Segment) -> None:
        """A segment outside any transaction set: reported once per run of them."""
        if seg.tag == "TA1" and self._group is None and self._ic is not None:
            self._ic.ta1s += 1  # TA1 acknowledgments may sit between ISA and GS
            return
        ic = self._interchange(seg)
        if self._quiet:
            return
        self._quiet = True
        where, code = (self._group.errors, None) if self._group is not None else (ic.errors, "022")
        self._error(where, f"segment {seg.tag} is outside any transaction set", seg, code=code)

    def _finish(self, last: str | None) -> None:
        """At the end of the file: every envelope must be closed (``last``: the ID read last)."""
        ic = self._ic
        if ic is None:
            return
        ic.encoding = self.scanner.encoding
        self._drain_warnings()
        missing = ["IEA"]
        if self._group is not None:
            missing.insert(0, "GE")
        if self._set is not None:
            missing.insert(0, "SE")
        n = self.scanner.segment_count
        after = f"segment {n} ({last})" if last is not None else f"segment {n}"
        raise self._error(
            ic.errors,
            f"the file ends after {after} without {', '.join(missing)}:"
            " truncated (an upload still arriving?)",
            n + 1,
            segment_id=missing[0],
            code="023",
            cls=TruncatedError,
        )
