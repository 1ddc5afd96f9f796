"""Scanning X12: a binary stream in, numbered segments out, in bounded memory.

``SegmentScanner`` reads fixed-size chunks, a character per byte, sniffs
the delimiters of every ISA afresh (mailbags mix them), and cuts an
interchange's text with ``str.split`` on its terminator, carrying the
unfinished segment over to the next chunk. It hands out segment texts in
batches; splitting them into elements is left to whoever consumes them
(``__iter__`` here, ``X12Reader`` in ``x12.reader``). Memory is bounded by the
chunk size and ``MAX_SEGMENT``. Envelope checks are ``x12.reader``'s job.

What real files carry, and how it is read (tests/data/corpus/SOURCES.md):

* CR, LF or CRLF after terminators, or as the terminator; when the terminator
  is not a line break, every CR/LF is dropped — that also mends segments
  hard-wrapped at 80 columns. Tabs/spaces indenting segments are dropped.
* A UTF-8 BOM, whitespace, NULs and a Ctrl-Z around interchanges.
* Control characters as delimiters (0x1C-0x1F, 0x15, 0x7F): text is only ever
  split on the sniffed delimiter and stripped of named characters, never with
  ``str.split()``/``strip()``/``splitlines()`` without arguments, which treat
  0x1C-0x1F and U+0085 as whitespace.
* EBCDIC (cp500), detected from the first bytes; its NL (0x15) decodes to
  U+0085 and the space padding of 80-byte records is dropped like indentation.
* Latin-1/Windows-1252 names: UTF-8 is tried, then cp1252 (its five
  undefined bytes read as latin-1 reads them), interchange by interchange (a
  mailbag's partners each write their own); the weakest used is that
  ``InterchangeSummary.encoding``.
* Two known partner mistakes are read the way a person would, and reported
  as warnings: non-breaking spaces padding the ISA, and a missing ISA16 (the
  terminator sits in its place; with a line break after it, the line break
  ends segments and the stray character at each segment's end is dropped).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from itertools import count, repeat
from typing import BinaryIO, NamedTuple

from ..errors import TruncatedError, X12Error
from .model import Delimiters, Segment

CHUNK_SIZE = 1 << 16
MAX_SEGMENT = 1 << 20  # a "segment" longer than this means there is no terminator
ISA_WINDOW = 512  # enough text to hold any ISA, hard-wrapped or NBSP-padded

_new = tuple.__new__  # builds a Segment without the NamedTuple's Python-level __new__
_BREAKS = "\r\n"
# What may sit between interchanges (a UTF-8 BOM as the bytes it is: text is
# scanned a character per byte).
_BETWEEN = re.compile("(?:[ \t\r\n\x00\x1a\x85]|\xef\xbb\xbf)*")
_skip_between = _BETWEEN.match
_IEA_OR_ISA = re.compile("I(?:EA|SA)")
# Not ``\s``: in a str pattern it matches \x1c-\x1f, which partners use as delimiters.
# IEA02 must be there; empty elements after it ("IEA*1*000000730*~") are allowed.
_TRAILER = re.compile(r"IEA([^0-9A-Za-z \t\n\r\f\v])[0-9]{1,5}\1[0-9]{1,9}\1*[^0-9A-Za-z]?\Z")


def digits(text: str) -> bool:
    """``text`` is ASCII digits only (``str.isdigit`` alone accepts "²" and "٣")."""
    return text.isascii() and text.isdigit()


MAX_NUMBER_DIGITS = 18  # an X12 N0/count element never needs more (SE01 has 10)


def number(text: str) -> int | None:
    """The value of a count or control number: ASCII digits, at most 18 of
    them past any leading zeros (padding, read by value as in any N0).

    None otherwise. ``int()`` of thousands of digits is slow and past 4,300
    digits raises; a partner's SE01 must not get that far.
    """
    if not digits(text):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= MAX_NUMBER_DIGITS else None


def trailer_present(tail: bytes) -> bool:
    """True if ``tail`` (a file's last bytes, say 4 KiB) ends with an IEA segment.

    Whitespace, NULs and Ctrl-Z padding after it are allowed; EBCDIC too. So
    are element separators after IEA02: generators that write every element
    end with "IEA*1*000000730*~", and the reader takes that. The watcher uses
    it to tell a finished upload from one still arriving.
    """
    for encoding in ("latin-1", "cp500"):
        text = tail.decode(encoding).replace("\r", "").replace("\n", "")
        if _TRAILER.search(text.rstrip(" \t\x00\x1a\x85")):
            return True
    return False


class _Isa(NamedTuple):
    """What ``sniff_isa`` learns from an ISA."""

    elements: list[str]  # ISA, ISA01 .. ISA16
    delimiters: Delimiters
    end: int  # index just after its terminator
    suffix: str  # a stray character ending every segment (missing ISA16), or ""
    wrapped: bool  # line breaks inside the ISA: hard-wrapped lines
    warnings: list[X12Error]


def _isa_error(
    message: str, code: str, cls: type[X12Error] = X12Error, element: int | None = None
) -> X12Error:
    return cls(message, segment_number=1, segment_id="ISA", code=code, element=element)


def sniff_isa(buf: str, base: int, eof: bool) -> _Isa:
    """Read the delimiters of the ISA starting at ``buf[base]``.

    The element separator follows "ISA"; ISA16 (the component separator)
    follows the 16th one and the terminator follows ISA16. Counting separators
    rather than trusting the fixed 106-character layout reads NBSP-padded
    ISAs; line breaks in front of ISA16 or the terminator are hard wraps.
    """
    n = len(buf)
    truncated = _isa_error(
        f"the file ends inside the ISA segment ({n - base} characters; an ISA has 106)",
        "023",
        TruncatedError,
    )

    def at(i: int) -> str:
        """``buf[i]``; running off the end means the file stops inside the ISA."""
        if i >= n:
            raise truncated
        return buf[i]

    elem = at(base + 3)
    if elem.isalnum() or elem in " \r\n":
        raise _isa_error(f"{elem!r} after 'ISA' cannot be an element separator", "026")
    p = base + 3
    for _ in range(15):  # on to the separator in front of ISA16
        p = buf.find(elem, p + 1, base + ISA_WINDOW)
        if p < 0:
            if eof and n < base + ISA_WINDOW:
                raise truncated
            raise _isa_error(
                f"no 16 elements separated by {elem!r} within {ISA_WINDOW} characters of "
                "the ISA (it has 106): an element far longer than the standard allows",
                "022",
            )
    missing16, q = False, p + 1
    if at(q) in _BREAKS:
        r = q
        while r < n and buf[r] in _BREAKS:
            r += 1
        if r >= n or buf[r].isalnum():  # "*P*\nGS": no ISA16, the line break ends the ISA
            missing16, comp, term, end = True, "", buf[q], q + 1
        else:  # a hard wrap in front of ISA16
            q = r
    if not missing16:
        comp, term, end = at(q), at(q + 1), q + 2
        if comp.isalnum():  # the 16th separator was found past the ISA
            raise _isa_error("the ISA segment has fewer than 16 elements", "022")
        if term.isalnum():  # "*P*~GS": no ISA16, its terminator moved up
            missing16, term, end = True, comp, q + 1
        elif term in _BREAKS:
            r = q + 1
            while r < n and buf[r] in _BREAKS:
                r += 1
            if r < n and not buf[r].isalnum() and buf[r] not in " \t\x00\x1a":
                term, end = buf[r], r + 1  # a hard wrap in front of the terminator
    if term == elem or comp == elem:
        raise _isa_error("the ISA has more than 16 elements, or ISA16 is empty", "027", element=16)
    warnings, suffix = [], ""
    if missing16:
        comp = next(c for c in ">:^!" if c not in (elem, term))
        warnings.append(
            _isa_error(
                f"ISA16 (component separator) is missing; read {term!r} as the segment"
                f" terminator and assumed {comp!r}",
                "027",
                element=16,
            )
        )
    elif term in _BREAKS:
        # edinet issue135: "~" sits in ISA16 and every segment ends "~" + LF.
        nxt = buf.find(term, end, end + 4096)
        if nxt > 0 and buf[end:nxt].removesuffix("\r").endswith(comp):
            suffix = comp
            warnings.append(
                _isa_error(
                    f"ISA16 is missing: {comp!r} stands in its place and ends every segment"
                    f" before the line break; read the line break as the terminator and"
                    f" dropped the trailing {comp!r}",
                    "027",
                    element=16,
                )
            )
    raw = buf[base : end - 1]
    text = raw.replace("\r", "").replace("\n", "")
    elements = text.split(elem)
    if len(elements) != 17:
        raise _isa_error(f"the ISA segment has {len(elements) - 1} elements, not 16", "022")
    version, isa11 = elements[12], elements[11]
    repetition = (
        isa11  # before 00402, ISA11 is the standards identifier ("U")
        if digits(version)
        and version >= "00402"
        and len(isa11) == 1
        and not isa11.isalnum()
        and isa11 not in (elem, comp, term, " ")
        else None
    )
    wrapped = term not in _BREAKS and (raw != text)
    return _Isa(elements, Delimiters(elem, comp, term, repetition), end, suffix, wrapped, warnings)


# cp1252 leaves five bytes undefined: read (and written back) as latin-1
# reads them, every byte is one character and the text encodes back to the
# very bytes read (``_Text``).
_GAPS_AS_LATIN1 = "edi_inbox.cp1252_gaps"


def _gaps_as_latin1(error: UnicodeError) -> tuple[str | bytes, int]:
    if isinstance(error, UnicodeDecodeError):
        return error.object[error.start : error.end].decode("latin-1"), error.end
    if isinstance(error, UnicodeEncodeError):  # "?" for what latin-1 has not either
        return error.object[error.start : error.end].encode("latin-1", "replace"), error.end
    raise error


codecs.register_error(_GAPS_AS_LATIN1, _gaps_as_latin1)
_C1 = re.compile(b"[\x80-\x9f]")  # where cp1252 and latin-1 read bytes apart


def _bytes_of(text: str) -> bytes:
    """The bytes ``_Decoder`` read ``text`` from."""
    try:
        return text.encode("latin-1")  # ~500x faster: as read, mostly
    except UnicodeEncodeError:  # a cp1252 letter past latin-1's
        return text.encode("cp1252", _GAPS_AS_LATIN1)


def encode_as_read(text: str, encoding: str) -> bytes:
    """``text`` (a 997, a TA1) in an interchange's encoding as the reader
    read it (``InterchangeSummary.encoding``): ASCII's as cp1252's, with its
    gaps as latin-1; "?" for a character the encoding has not."""
    if encoding in ("ascii", "cp1252"):
        return text.encode("cp1252", _GAPS_AS_LATIN1)
    return text.encode(encoding, errors="replace")


class _Decoder:
    """Bytes to text for scanning: a character per byte, as cp1252 reads
    them (its five gaps as latin-1), or EBCDIC (cp500) throughout. Delimiters
    are sniffed from this text; ``_Text`` decodes the segments' runs again
    where the bytes are UTF-8."""

    def __init__(self) -> None:
        self.ebcdic = False

    def start(self, head: bytes) -> bytes:
        """Look at the file's first bytes: drop a UTF-8 BOM, notice EBCDIC."""
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        if head.lstrip(b" \t\r\n\x00\x40\x05\x15\x25")[:3] == b"\xc9\xe2\xc1":  # ISA
            self.ebcdic = True
        return head

    def decode(self, data: bytes) -> str:
        if self.ebcdic:
            return data.decode("cp500")
        if data.isascii():
            return data.decode("ascii")
        if _C1.search(data) is None:  # cp1252 reads these bytes as latin-1 does, ~1000x faster
            return data.decode("latin-1")
        # Every chunk alike: a delimiter in 0x80-0x9F must read as one character
        # throughout (a chunk that happens to be valid UTF-8 may hold one too).
        return data.decode("cp1252", _GAPS_AS_LATIN1)


class _Text:
    """One interchange's segment texts as their bytes read: ASCII, else UTF-8,
    else cp1252 (its gaps as latin-1). The choice only moves down that
    list, so ``encoding`` names the weakest used so far; each interchange of
    a mailbag starts again (its partner wrote it). Scanned text holds a
    character per byte, and is decoded a run of whole segments at a time (the
    text between two terminators): a character's bytes are never cut apart.
    An interchange with a delimiter outside ASCII is never UTF-8 (a
    character's bytes could hold it): it starts at cp1252, its delimiters the
    characters it is split on."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def __call__(self, raw: str) -> str:
        if raw.isascii() or self.encoding in ("cp1252", "cp500"):
            return raw
        try:
            text = _bytes_of(raw).decode("utf-8")
        except UnicodeDecodeError:
            self.encoding = "cp1252"
            return raw
        self.encoding = "utf-8"
        return text


def _first_encoding(d: Delimiters, ebcdic: bool) -> str:
    """How an interchange's text is first taken (``_Text``): EBCDIC's cp500,
    ASCII (then UTF-8 or cp1252 as its bytes need), or cp1252 for one with a
    delimiter outside ASCII."""
    if ebcdic:
        return "cp500"
    delimiters = d.element + d.component + d.segment + (d.repetition or "")
    return "ascii" if delimiters.isascii() else "cp1252"


class SegmentScanner:
    """The low-level streamer: ``for segment in scanner`` gives every ``Segment``.

    ``pieces()`` is the raw form the reader uses: ``(number, texts)`` batches
    of segment texts, not yet split into elements, the first numbered
    ``number``; ``segments(number, texts)`` turns one into ``Segment``s.
    Splitting each text only when it is consumed keeps few segments alive at
    a time, which is markedly faster than splitting a whole chunk ahead
    (fresh memory for every object instead of recycled memory).

    ``delimiters`` and ``encoding`` describe the interchange being read;
    segment numbers restart at 1 with each ISA. ``warnings`` collects what was
    read leniently; ``X12Reader`` drains it into the interchange summaries.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> None:
        self._stream = stream
        self._chunk_size = chunk_size
        self._decoder = _Decoder()
        self._text = _Text("ascii")
        self._buf = ""
        self._pos = 0  # inside an interchange, _buf[_pos - 1] is a terminator
        self._eof = False
        self._started = False
        self.segment_count = 0  # segments of the current interchange so far
        self.previous_count = 0  # ... and of the one before
        self.previous_encoding = "ascii"  # the one before's ``encoding``
        self.unterminated = False  # the file's last segment had no terminator
        self.interchange_count = 0
        self.delimiters: Delimiters | None = None
        self.warnings: list[X12Error] = []

    @property
    def encoding(self) -> str:
        """The current interchange's weakest decoding so far: ascii, utf-8,
        cp1252 or cp500."""
        return self._text.encoding

    def __iter__(self) -> Iterator[Segment]:
        for first, texts in self.pieces():
            yield from self.segments(first, texts)

    def batches(self) -> Iterator[list[Segment]]:
        """Every segment of the file, in lists; the ISA always comes alone."""
        for first, texts in self.pieces():
            yield list(self.segments(first, texts))

    def segments(self, first: int, texts: list[str]) -> Iterator[Segment]:
        """The ``Segment``s of a ``pieces()`` batch, split and built in C, one at a time."""
        elements = map(str.split, texts, repeat(self._elem))
        return map(_new, repeat(Segment), zip(elements, count(first)))

    def pieces(self) -> Iterator[tuple[int, list[str]]]:
        """Every segment's text, in batches: (number of the first, texts)."""
        while self._start_interchange():
            yield 1, [self._isa]
            yield from self._body()

    @property
    def element_separator(self) -> str:
        """The current interchange's element separator (to split ``pieces()`` texts)."""
        return self._elem

    def _fill(self) -> None:
        """Append the next decoded chunk to the buffer (the caller has compacted it)."""
        data = self._stream.read(self._chunk_size)
        if not self._started:
            self._started = True
            while data and len(data) < 8:  # enough to see a BOM or EBCDIC
                more = self._stream.read(self._chunk_size)
                if not more:
                    break
                data += more
            data = self._decoder.start(data)
        if data:
            self._buf += self._decoder.decode(data)
        else:
            self._eof = True

    def _start_interchange(self) -> bool:
        """Skip padding, then sniff the next ISA; False at the end of the file."""
        while True:
            pos = self._skip_padding(self._pos)
            if pos < len(self._buf) or self._eof:
                break
            self._buf, self._pos = "", 0
            self._fill()
        if pos >= len(self._buf):
            if self.interchange_count == 0:
                raise TruncatedError("the file is empty: no ISA segment")
            return False
        while len(self._buf) - pos < ISA_WINDOW and not self._eof:
            self._buf, pos = self._buf[pos:], 0
            self._fill()
        if not self._buf.startswith("ISA", pos):
            start = self._buf[pos : pos + 16]
            if self.interchange_count == 0:
                raise X12Error(
                    f"not X12: the file does not start with an ISA segment (it starts {start!r})"
                )
            raise X12Error(
                f"after the IEA of interchange {self.interchange_count} comes {start!r},"
                " not another ISA"
            )
        self._sniff(pos)
        self.interchange_count += 1
        return True

    def _skip_padding(self, pos: int) -> int:
        """Past what may sit between interchanges: white space, NULs, Ctrl-Z,
        and the last interchange's terminator written twice (``IEA*1*…~~``:
        an empty segment, as is skipped inside an interchange)."""
        term = self._term if self.interchange_count else ""
        while True:
            pos = _skip_between(self._buf, pos).end()  # type: ignore[union-attr]
            if not (term and self._buf.startswith(term, pos)):
                return pos
            pos += len(term)

    def _sniff(self, base: int) -> None:
        """Set up the interchange whose ISA starts at ``base``."""
        isa = sniff_isa(self._buf, base, self._eof)
        d = isa.delimiters
        elem, comp, term = d.element, d.component, d.segment
        self.delimiters = d
        self._elem, self._term, self._suffix = elem, term, isa.suffix
        drop = "\r" if term == "\n" else "\n" if term == "\r" else "\r\n"
        self._drop = [c for c in drop if c not in (elem, comp)]
        self._lead = "".join(c for c in " \t" if c not in (elem, comp, term))
        self._pad = "".join(c for c in " \t\r\n\x00\x1a\x85" if c not in (elem, comp))
        # Indentation (pretty-printed files, EBCDIC record padding) shows right after
        # the ISA; looking for it in every chunk would cost a pass over each.
        after = self._buf[isa.end : isa.end + 8].lstrip("".join(self._drop))
        self._indent = self._lead if after[:1] and after[:1] in self._lead else ""
        self._wrapped = None
        if isa.wrapped:  # a line break may even fall inside "IEA"
            t, e = re.escape(term), re.escape(elem)
            self._wrapped = re.compile(
                f"{t}[ \\t\\r\\n]*(?:(I[\\r\\n]*E[\\r\\n]*A)[\\r\\n]*{e}|(ISA)[^0-9A-Za-z\\s])"
            )
        self.previous_encoding = self._text.encoding
        self._text = _Text(_first_encoding(d, self._decoder.ebcdic))
        # Decoded first: a UTF-8 letter's bytes may hold A0 (Š); and split, as
        # the separator itself may be an NBSP.
        elements = self._text(elem.join(isa.elements)).split(elem)
        self._isa = elem.join(e.replace("\xa0", " ") for e in elements)
        if any("\xa0" in e for e in elements):
            self.warnings.append(
                X12Error(
                    "the ISA is padded with non-breaking spaces (U+00A0), read as spaces",
                    segment_number=1,
                    segment_id="ISA",
                )
            )
        self.previous_count, self.segment_count = self.segment_count, 1
        self.unterminated = False
        self._pos = isa.end
        self.warnings.extend(isa.warnings)

    def _drop_breaks(self, text: str) -> str:
        """``text`` without the line breaks that are not terminators."""
        drop = [c for c in self._drop if c in text]
        if drop and text.isascii():  # bytes.replace deletes twice as fast as str.replace
            data = text.encode("ascii")
            for c in drop:
                data = data.replace(c.encode("ascii"), b"")
            return data.decode("ascii")
        for c in drop:
            text = text.replace(c, "")
        return text

    def _split(self, region: str) -> tuple[int, list[str]]:
        """Segment texts of ``region``: text between two terminators, with no IEA in it."""
        region = self._text(self._drop_breaks(region))
        term = self._term
        pieces = region.split(term)
        if not self._indent and region[:1] in self._lead:
            self._indent = self._lead  # indentation that did not show after the ISA
        if self._indent:
            pieces = [p.lstrip(self._indent) for p in pieces]
        if self._suffix:
            pieces = [p.removesuffix(self._suffix) for p in pieces]
        if self._indent or not all(pieces):  # all() is cheaper than `"" in pieces`
            pieces = [p for p in pieces if p]
        first = self.segment_count + 1
        self.segment_count += len(pieces)
        return first, pieces

    def _last(self, text: str) -> tuple[int, list[str]]:
        """The text after the file's last terminator: a segment without one, or padding."""
        for c in self._drop:
            text = text.replace(c, "")
        text = text.rstrip(self._pad).lstrip(self._lead).removesuffix(self._suffix)
        if not text:
            return self.segment_count + 1, []
        self.segment_count += 1
        self.unterminated = True
        text = self._text(text)
        self.warnings.append(
            X12Error(
                "the last segment has no segment terminator",
                segment_number=self.segment_count,
                segment_id=text.split(self._elem, 1)[0][:3],
            )
        )
        return self.segment_count, [text]

    def _find_end(self, buf: str, pos: int) -> tuple[int, int, str] | None:
        """Where the interchange's text ends: (its terminator, tag start, "IEA" or "ISA").

        That is the terminator, maybe whitespace, then "IEA" and the element
        separator, or a new "ISA" (its IEA missing). One regex pass finds the
        candidates; it is several times cheaper than a pattern that starts at
        every terminator.
        """
        if self._wrapped is not None:
            m = self._wrapped.search(buf, pos - 1)
            if m is None:
                return None
            return (m.start(), m.start(1), "IEA") if m.group(1) else (m.start(), m.start(2), "ISA")
        term, elem, n, search = self._term, self._elem, len(buf), _IEA_OR_ISA.search
        m = search(buf, pos)
        while m is not None:
            c = m.start()
            if c + 3 >= n:
                return None  # cannot judge yet: the next chunk will tell
            after, tag = buf[c + 3], "IEA" if buf[c + 1] == "E" else "ISA"
            if after == elem if tag == "IEA" else not (after.isalnum() or after in " \t\r\n"):
                b = c - 1
                while b >= pos and buf[b] != term and buf[b] in " \t\r\n":
                    b -= 1
                if buf[b] == term:
                    return b, c, tag
            m = search(buf, c + 1)
        return None

    def _body(self) -> Iterator[tuple[int, list[str]]]:
        """The segments after the ISA, up to and including the IEA (or the file's end)."""
        term = self._term
        while True:
            buf, pos = self._buf, self._pos
            end = self._find_end(buf, pos)
            if end is None:
                cut = buf.rfind(term, pos)
                if cut > pos:
                    yield self._split(buf[pos:cut])
                if cut >= pos:
                    pos = cut + 1
                if self._eof:
                    self._pos = len(buf)
                    yield self._last(buf[pos:])
                    return
                if len(buf) - pos > MAX_SEGMENT:
                    raise X12Error(
                        f"no segment terminator {term!r} in the {MAX_SEGMENT} characters after"
                        f" segment {self.segment_count}",
                        segment_number=self.segment_count + 1,
                    )
                self._buf, self._pos = buf[pos - 1 :], 1
                self._fill()
                continue
            cut, tag_at, tag = end
            if cut > pos:
                yield self._split(buf[pos:cut])
            if tag == "ISA":  # a new interchange without this one's IEA: the reader says so
                self._pos = tag_at
                return
            stop = buf.find(term, tag_at)
            while stop < 0 and not self._eof:
                buf, tag_at = buf[tag_at:], 0
                self._buf = buf
                self._fill()
                buf = self._buf
                stop = buf.find(term, tag_at)
            if stop < 0:
                self._pos = len(buf)
                yield self._last(buf[tag_at:])
                return
            self._pos = stop + 1
            piece = buf[tag_at:stop]
            for c in self._drop:
                piece = piece.replace(c, "")
            self.segment_count += 1
            yield self.segment_count, [self._text(piece.removesuffix(self._suffix))]
            return


def read_segments(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[Segment]:
    """Every segment of every interchange in ``stream``, without envelope checks."""
    return iter(SegmentScanner(stream, chunk_size))
