"""Which reader a clinical ECG file needs, decided from its content, not its name.

Hospital exports are ``.xml`` from several vendors, DICOM files with any (or no)
extension, SCP-ECG, ISHNE and EDF. The first bytes say which:

==========  ==============================================================
format      content
==========  ==============================================================
dicom       ``DICM`` at byte 128 (after the 128-byte preamble)
ishne       magic ``ISHNE1.0`` at byte 0 (``ANN  1.0`` is an annotation file)
edf         version field ``0`` + 7 spaces at byte 0 (EDF and EDF+)
scp         record CRC + length, then section 0 (id 0, ``SCPECG`` reserved bytes)
muse        XML root ``<RestingECG>`` (GE MUSE)
philips     XML root ``<restingecgdata>`` (Philips Sierra / PageWriter)
aecg        XML root ``<AnnotatedECG>`` in namespace ``urn:hl7-org:v3`` (HL7 aECG)
==========  ==============================================================

This module is also the one registry of those readers (lazily imported, so
reading a WFDB record never imports ``pydicom``).
"""

from __future__ import annotations

import importlib
import os
import re
import struct

from ..errors import FormatError

# format -> (module in ecgtext.io, function (path, ReadOptions) -> Ecg)
CLINICAL_READERS: dict[str, tuple[str, str]] = {
    "muse": ("muse_reader", "read_muse"),
    "philips": ("philips_reader", "read_philips"),
    "aecg": ("aecg_reader", "read_aecg"),
    "dicom": ("dicom_reader", "read_dicom"),
    "scp": ("scp_reader", "read_scp"),
    "ishne": ("ishne_reader", "read_ishne"),
    "edf": ("edf_reader", "read_edf"),
}
# extensions a folder walk lists (content decides the reader; ".xml" that is not an ECG is reported)
CLINICAL_EXT: tuple[str, ...] = (".xml", ".dcm", ".dicom", ".scp", ".ecg", ".edf")

HL7_NS = "urn:hl7-org:v3"
_XML_ROOTS = {"RestingECG": "muse", "restingecgdata": "philips"}
_EXPECTED_XML = "GE MUSE <RestingECG>, Philips <restingecgdata> or HL7 aECG <AnnotatedECG>"
_HEAD_BYTES = 64 * 1024  # enough for an XML prolog with long comments or a DOCTYPE
# prolog items before the root element: declaration, processing instructions, comments, DOCTYPE
_PROLOG = re.compile(r"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]*|[^\[>]*\[.*?\]\s*)>)", re.DOTALL)
_ROOT = re.compile(r"\s*<([A-Za-z_][\w.\-]*(?::[\w.\-]+)?)((?:\s+[^>]*?)?)/?>", re.DOTALL)
_XMLNS = re.compile(r"""xmlns(?::([\w.\-]+))?\s*=\s*(["'])(.*?)\2""", re.DOTALL)


def clinical_reader(fmt: str):
    """The reader function registered for ``fmt`` (imported on first use)."""
    module, func = CLINICAL_READERS[fmt]
    return getattr(importlib.import_module(f".{module}", __package__), func)


def _decode_xml_head(head: bytes) -> str | None:
    """Text of an XML file's first bytes, or ``None`` if they do not look like XML."""
    if head.startswith(b"\xef\xbb\xbf"):
        enc, head = "utf-8", head[3:]
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
    elif head.startswith(b"<\x00"):
        enc = "utf-16-le"
    elif head.startswith(b"\x00<"):
        enc = "utf-16-be"
    else:
        enc = "latin-1"  # any ASCII-compatible declared encoding: the prolog is ASCII
    if enc.startswith("utf-16") and len(head) % 2:
        head = head[:-1]
    txt = head.decode(enc, errors="replace")
    return txt if txt.lstrip().startswith("<") else None


def xml_root(head: bytes) -> tuple[str, str] | None:
    """``(namespace, local name)`` of the root element in an XML file's first bytes, else ``None``."""
    txt = _decode_xml_head(head)
    if txt is None:
        return None
    pos = 0
    while (m := _PROLOG.match(txt, pos)) is not None and m.end() > pos:
        pos = m.end()
    m = _ROOT.match(txt, pos)
    if m is None:
        return None
    qname, attrs = m[1], m[2] or ""
    prefix, _, name = qname.rpartition(":")
    ns = {(p or ""): uri for p, _, uri in _XMLNS.findall(attrs)}
    return ns.get(prefix, ""), name


def _is_scp(head: bytes, size: int) -> bool:
    """Record CRC (2 bytes) + record length (4), then the section 0 header (id 0, ``SCPECG``)."""
    if len(head) < 22:
        return False
    length = struct.unpack_from("<I", head, 2)[0]
    section_id = struct.unpack_from("<H", head, 8)[0]
    return section_id == 0 and (head[16:22] == b"SCPECG" or length == size)


def sniff_format(path: str) -> str | None:
    """The clinical format of ``path`` from its content; ``None`` if it is none of them.

    Raises :class:`FormatError` for XML whose root is not an ECG we read, an
    ISHNE annotation file, and a file whose extension promises a clinical format
    (``.xml``, ``.dcm``, ``.scp``, ``.ecg``, ``.edf``) its content does not have.
    """
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    size = os.path.getsize(path)
    ext = os.path.splitext(path)[1].lower()
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"ISHNE1.0"):
        return "ishne"
    if head.startswith(b"ANN  1.0"):
        raise FormatError(path, "is an ISHNE annotation file, not an ECG (read the .ecg file beside it)")
    if head[:8] == b"0       " and len(head) >= 256:
        return "edf"
    if _is_scp(head, size):
        return "scp"
    root = xml_root(head)
    if root is not None:
        ns, name = root
        if name in _XML_ROOTS:
            return _XML_ROOTS[name]
        if name == "AnnotatedECG" and ns == HL7_NS:
            return "aecg"
        shown = f"<{name}>" + (f" (namespace {ns})" if ns else "")
        raise FormatError(path, f"XML root {shown} is not an ECG format we read; expected {_EXPECTED_XML}")
    if ext in CLINICAL_EXT:
        expected = {".xml": f"XML ({_EXPECTED_XML})", ".dcm": "DICOM ('DICM' at byte 128)",
                    ".dicom": "DICOM ('DICM' at byte 128)", ".scp": "SCP-ECG (section 0 at byte 6)",
                    ".ecg": "ISHNE Holter ('ISHNE1.0' magic)", ".edf": "EDF (version '0' header)"}[ext]
        raise FormatError(path, f"content is not {expected}")
    return None
