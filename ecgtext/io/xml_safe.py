"""Parse untrusted XML (ECG exports) safely: no entities, nothing fetched, bounded size.

Clinical ECG exports come from outside: a crafted file must not make us read
local files or reach the network (external entities), or expand a few bytes into
gigabytes (entity expansion). Any entity declaration is refused; no DTD is ever
loaded (MUSE declares ``restecg.dtd``, which is ignored, not fetched). Declared
encodings (UTF-8, ISO-8859-1, UTF-16 with BOM) are handled by the parser from
the raw bytes.

The parser is ``lxml`` (libxml2) with entity resolution, DTD loading and network
access switched off: measured on the reference exports it parses 2-5x faster
than ``defusedxml`` over the pure-Python ElementTree builder (MUSE 3.0 -> 0.9 ms,
aECG 5.9 -> 2.0 ms, Philips UTF-16 5.3 -> 1.5 ms), which is most of a record's
read time. Files that mention ``<!ENTITY`` at all go through ``defusedxml``,
which names the declaration it refuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import fromstring as defused_fromstring
from lxml import etree

from ..errors import FormatError

# One resting ECG export is 0.1-2 MB; HL7 aECG Holter extracts reach tens of MB.
MAX_XML_BYTES = 256 * 2**20
# libxml2 refuses text nodes over 10 MB unless told the document is huge; a long aECG
# keeps each lead's digits in one text node. Entities are refused, so lifting that
# limit for big files cannot expand anything.
_HUGE_TREE_BYTES = 8 * 2**20
_ENTITY_MARK = b"<!ENTITY"  # ASCII-compatible encodings: UTF-8, ISO-8859-x, Windows-125x
_ENTITY_MARKS_WIDE = ("<!ENTITY".encode("utf-16-le"), "<!ENTITY".encode("utf-16-be"))

Element = Any  # an lxml element: ``.tag``, ``.text``, ``.get``, iteration over children


def _mentions_entities(data: bytes) -> bool:
    if _ENTITY_MARK in data:
        return True
    # UTF-16 (Philips 1.04 files): a NUL among the first bytes gives it away ("<\0?\0x\0...")
    return b"\0" in data[:4] and any(mark in data for mark in _ENTITY_MARKS_WIDE)


def parse_xml(path: str, max_bytes: int = MAX_XML_BYTES) -> Element:
    """The root element of the XML file ``path``, parsed without entities or network access.

    Raises :class:`FormatError` (naming the file) for files over ``max_bytes``,
    XML that is not well-formed, and any entity or external reference.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise FormatError(path, f"XML file of {size / 2**20:.1f} MiB is larger than the "
                                f"{max_bytes / 2**20:.1f} MiB accepted for one ECG")
    with open(path, "rb") as fh:
        data = fh.read()
    if _mentions_entities(data):
        _refuse_entities(path, data)
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True,
                             dtd_validation=False, remove_comments=True, remove_pis=True,
                             huge_tree=size > _HUGE_TREE_BYTES)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as err:
        raise FormatError(path, f"not well-formed XML ({_first_line(err)})") from None
    if root is None:
        raise FormatError(path, "not well-formed XML (no root element)")
    dtd = root.getroottree().docinfo.internalDTD
    entity = next(iter(dtd.iterentities()), None) if dtd is not None else None
    if entity is not None:
        # reached only by encodings the byte scan does not know (e.g. UTF-32): the guarantee
        name = entity.name
        raise FormatError(path, f"XML declares the entity or external reference {name!r}; refused "
                                "(entities are never expanded or fetched)")
    return root


def _refuse_entities(path: str, data: bytes) -> None:
    """Raise the precise refusal for a document that declares entities (``defusedxml`` names them)."""
    try:
        defused_fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except (EntitiesForbidden, ExternalReferenceForbidden) as err:
        name = getattr(err, "name", None) or getattr(err, "sysid", None) or "?"
        raise FormatError(path, f"XML declares the entity or external reference {name!r}; refused "
                                "(entities are never expanded or fetched)") from None
    except (DTDForbidden, DefusedXmlException):
        raise FormatError(path, "XML contains a construct refused for safety (entity or external "
                                "reference); nothing was fetched") from None
    except Exception as err:  # noqa: BLE001 - any parse failure of a file that mentions entities
        raise FormatError(path, f"not well-formed XML ({_first_line(err)})") from None
    # "<!ENTITY" only inside text or a comment: not a declaration; parse normally


def _first_line(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return msg[0] if msg else "parse error"


def local(tag: str) -> str:
    """``"{urn:hl7-org:v3}sequence"`` -> ``"sequence"``."""
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


def namespace(tag: str) -> str:
    """``"{urn:hl7-org:v3}sequence"`` -> ``"urn:hl7-org:v3"``; ``""`` without a namespace."""
    return tag[1:].split("}", 1)[0] if tag[:1] == "{" else ""


def children(elem: Element, name: str) -> Iterator[Element]:
    """Direct children of ``elem`` with local name ``name`` (any namespace, or none)."""
    # lxml matches "{*}name" in C: several times faster than comparing local names here
    return elem.iterchildren("{*}" + name)


def child(elem: Element | None, *names: str) -> Element | None:
    """Follow a path of local names through direct children; ``None`` if any step is missing."""
    for name in names:
        if elem is None:
            return None
        elem = next(elem.iterchildren("{*}" + name), None)
    return elem


def text(elem: Element | None, *names: str) -> str | None:
    """Stripped text at a path of local names (``None`` if missing or empty)."""
    node = child(elem, *names) if names else elem
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    return value or None
