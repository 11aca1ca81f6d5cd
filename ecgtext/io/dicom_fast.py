"""Finding the few DICOM elements an ECG reader needs without building ``pydicom`` datasets.

Why this exists (measured on a 2-core AMD EPYC, AVX2): ``pydicom.dcmread`` spent
16-17 ms of the Mortara ELI 250 file's ~21 ms parsing a 77-item Waveform
Annotation Sequence of undefined length that the reader never uses (with
``specific_tags`` pydicom still builds every item to find the sequence's end),
and converting the channel-definition sequences into datasets was most of the
~8 ms of a 12-lead file. :func:`scan` walks element headers only
(``struct.unpack_from`` on one buffer), skips what it is not asked for, by
length or, for undefined lengths, by the item and sequence delimiters, and
returns the kept values as raw bytes in plain dicts.

It understands exactly two encodings, Explicit and Implicit VR Little Endian
(what carts and PACS write), and a well-formed element stream. Anything else
(another transfer syntax, no ``DICM`` preamble, an unknown VR or one that
differs from the data dictionary's for a kept tag, an implicit/explicit switch,
undefined-length values other than sequences, truncation, trailing bytes)
raises :class:`Unsupported`, and the caller reads the file with ``pydicom``.
Tags and VRs come from ``pydicom``'s data dictionary; values are converted by
the caller (``pydicom`` for text that depends on the character set).
"""

from __future__ import annotations

import struct
from typing import Union

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"

_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 16
# explicit VR: these have 2 reserved bytes and a 4-byte length (PS3.5 7.1.2), the rest a 2-byte length
_LONG_VRS = frozenset(v.encode() for v in "OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(v.encode() for v in "AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_HHL = struct.Struct("<HHL").unpack_from  # tag group, element, 4-byte length (implicit VR, items)
_HH2sH = struct.Struct("<HH2sH").unpack_from  # tag group, element, VR, 2-byte length (explicit VR)
_L = struct.Struct("<L").unpack_from
_ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0")  # item, sequence delimiter (little endian)

# a schema: keyword -> None (keep the value's bytes) or the schema of the sequence's items
Schema = dict[str, Union["Schema", None]]
# a schema as tags: tag -> (the VRs the data dictionary allows, the items' schema or None)
Compiled = dict[int, tuple[frozenset[bytes], Union["Compiled", None]]]
# what scan returns: tag -> the value's bytes or a list of items
Node = dict[int, Union[bytes, list["Node"]]]


class Unsupported(Exception):
    """The fast path does not understand this file; read it with ``pydicom``."""


def compile_schema(schema: Schema) -> Compiled:
    """Keywords -> tags and VRs, from ``pydicom``'s data dictionary (do it once, not per file)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tags: Compiled = {}
    for keyword, sub in schema.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword} is not a DICOM keyword")
        vrs = frozenset(v.encode() for v in dictionary_VR(tag).split(" or "))
        tags[tag] = (vrs, None if sub is None else compile_schema(sub))
    return tags


_TRANSFER_SYNTAX: Compiled = {0x00020010: (frozenset({b"UI"}), None)}


def transfer_syntax(buf: bytes) -> tuple[str, int]:
    """The Transfer Syntax UID of a Part 10 file and the offset where its data set starts.

    Raises :class:`Unsupported` without a 128-byte preamble and ``DICM``, or a file meta
    group that is not plain Explicit VR Little Endian ending before the data set.
    """
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Unsupported("no DICM preamble")
    meta, pos = _dataset(buf, 132, None, False, _TRANSFER_SYNTAX, 0, group=0x0002)
    value = meta.get(0x00020010)
    if not isinstance(value, bytes):
        raise Unsupported("no transfer syntax")
    return value.decode("ascii", "replace").strip(" \0"), pos


def scan(buf: bytes, schema: Compiled) -> tuple[Node, bool]:
    """The elements of ``schema`` in a Part 10 file's bytes, and whether it is implicit VR.

    Values are the bytes as stored (little endian, unconverted); sequences are lists of
    items (dicts of the same form). Raises :class:`Unsupported` for anything but a
    well-formed Explicit or Implicit VR Little Endian file.
    """
    syntax, pos = transfer_syntax(buf)
    if syntax not in (EXPLICIT_VR_LE, IMPLICIT_VR_LE):
        raise Unsupported(f"transfer syntax {syntax}")
    implicit = syntax == IMPLICIT_VR_LE
    # pydicom checks the first element against the transfer syntax (two upper-case letters where
    # an explicit VR would be) and follows the data when they disagree; here that is "not understood"
    looks_explicit = len(buf) >= pos + 6 and 0x40 < buf[pos + 4] < 0x5B and 0x40 < buf[pos + 5] < 0x5B
    if len(buf) > pos and looks_explicit is implicit:
        raise Unsupported("the data set's VR encoding differs from its transfer syntax")
    top, _ = _dataset(buf, pos, len(buf), implicit, schema, 0)
    return top, implicit


def _dataset(buf: bytes, pos: int, end: int | None, implicit: bool, schema: Compiled | None,
             depth: int, group: int | None = None) -> tuple[Node, int]:
    """Elements from ``pos`` to ``end`` (or to an item delimiter when ``end`` is None; or while the
    tag group is ``group``); keeps those in ``schema``. Returns them and the position after."""
    out: Node = {}
    n = len(buf)
    stop = n if end is None else end
    wanted = schema or {}
    while pos < stop:
        if pos + 8 > n:
            raise Unsupported("truncated")
        if implicit:
            tag_group, tag_elem, length = _HHL(buf, pos)
            vr = None
        else:  # one unpack for the common short form
            tag_group, tag_elem, vr, length = _HH2sH(buf, pos)
        if group is not None and tag_group != group:
            return out, pos
        if tag_group == 0xFFFE:  # items and delimiters have no VR
            if tag_elem == 0xE00D and end is None:  # item delimiter
                return out, pos + 8
            raise Unsupported("item tag out of place")
        head = 8
        if vr is not None and vr not in _SHORT_VRS:
            if vr not in _LONG_VRS:
                raise Unsupported("unknown VR")
            if pos + 12 > n:
                raise Unsupported("truncated")
            length = _L(buf, pos + 8)[0]
            head = 12
        pos += head
        keep = wanted.get(tag_group << 16 | tag_elem) if wanted else None
        if keep is not None and vr is not None and vr not in keep[0]:
            raise Unsupported("VR differs from the data dictionary")
        if length == _UNDEFINED:
            # only sequences may have an undefined length here (encapsulated data, UN: pydicom)
            if not (vr == b"SQ" or vr is None and buf[pos:pos + 4] in _ITEM_TAGS):
                raise Unsupported("undefined length that is not a sequence")
            if keep is not None and keep[1] is None:
                raise Unsupported("a kept value is a sequence")
            items, pos = _sequence(buf, pos, None, implicit, keep[1] if keep else None, depth + 1)
            if keep is not None:
                out[tag_group << 16 | tag_elem] = items
            continue
        if pos + length > n:
            raise Unsupported("truncated")
        if keep is not None:
            if keep[1] is not None:
                if vr is None and length and buf[pos:pos + 4] not in _ITEM_TAGS:
                    raise Unsupported("a sequence without items")
                out[tag_group << 16 | tag_elem] = _sequence(buf, pos, pos + length, implicit, keep[1],
                                                            depth + 1)[0]
            else:
                out[tag_group << 16 | tag_elem] = buf[pos:pos + length]
        pos += length
    if end is None or pos != end:
        raise Unsupported("truncated" if end is None else "an element runs past its item")
    return out, pos


def _sequence(buf: bytes, pos: int, end: int | None, implicit: bool, schema: Compiled | None,
              depth: int) -> tuple[list[Node], int]:
    """Items from ``pos`` to ``end`` (or the sequence delimiter); parsed only with a ``schema``
    (otherwise walked when their length is undefined, else jumped over)."""
    if depth > _MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    items: list[Node] = []
    n = len(buf)
    stop = n if end is None else end
    while pos < stop:
        if pos + 8 > n:
            raise Unsupported("truncated")
        tag_group, tag_elem, length = _HHL(buf, pos)
        pos += 8
        if tag_group != 0xFFFE:
            raise Unsupported("not an item")
        if tag_elem == 0xE0DD and end is None:  # sequence delimiter
            return items, pos
        if tag_elem != 0xE000:
            raise Unsupported("not an item")
        if length == _UNDEFINED:
            item, pos = _dataset(buf, pos, None, implicit, schema, depth)
        elif pos + length > n:
            raise Unsupported("truncated")
        elif schema is None:
            pos += length
            continue
        else:
            item, pos = _dataset(buf, pos, pos + length, implicit, schema, depth)
        if schema is not None:
            items.append(item)
    if end is None or pos != end:
        raise Unsupported("truncated" if end is None else "an item runs past its sequence")
    return items, pos
