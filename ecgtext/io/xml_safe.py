"""Parse untrusted XML (ECG exports) safely: no entities, nothing fetched, bounded size.

Clinical ECG exports come from outside: a crafted file must not make us read
local files or reach the network (external entities), or expand a few bytes into
gigabytes (entity expansion). ``defusedxml`` refuses any entity declaration;
expat never loads an external DTD (MUSE declares ``restecg.dtd``, which is
ignored, not fetched). Declared encodings (UTF-8, ISO-8859-1, UTF-16 with BOM)
are handled by the parser from the raw bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from xml.etree.ElementTree import Element, ParseError

from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import fromstring

from ..errors import FormatError

# One resting ECG export is 0.1-2 MB; HL7 aECG Holter extracts reach tens of MB.
MAX_XML_BYTES = 256 * 2**20


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
    try:
        return fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except (EntitiesForbidden, ExternalReferenceForbidden) as err:
        name = getattr(err, "name", None) or getattr(err, "sysid", None) or "?"
        raise FormatError(path, f"XML declares the entity or external reference {name!r}; refused "
                                "(entities are never expanded or fetched)") from None
    except (DTDForbidden, DefusedXmlException):
        raise FormatError(path, "XML contains a construct refused for safety (entity or external "
                                "reference); nothing was fetched") from None
    except ParseError as err:
        raise FormatError(path, f"not well-formed XML ({err})") from None


def local(tag: str) -> str:
    """``"{urn:hl7-org:v3}sequence"`` -> ``"sequence"``."""
    return tag.rsplit("}", 1)[-1] if tag[:1] == "{" else tag


def namespace(tag: str) -> str:
    """``"{urn:hl7-org:v3}sequence"`` -> ``"urn:hl7-org:v3"``; ``""`` without a namespace."""
    return tag[1:].split("}", 1)[0] if tag[:1] == "{" else ""


def children(elem: Element, name: str) -> Iterator[Element]:
    """Direct children of ``elem`` with local name ``name`` (any namespace)."""
    for child in elem:
        if isinstance(child.tag, str) and local(child.tag) == name:
            yield child


def child(elem: Element | None, *names: str) -> Element | None:
    """Follow a path of local names through direct children; ``None`` if any step is missing."""
    for name in names:
        if elem is None:
            return None
        elem = next(children(elem, name), None)
    return elem


def text(elem: Element | None, *names: str) -> str | None:
    """Stripped text at a path of local names (``None`` if missing or empty)."""
    node = child(elem, *names) if names else elem
    if node is None or node.text is None:
        return None
    value = node.text.strip()
    return value or None
