"""Untrusted XML: entities refused in every encoding, nothing loaded or fetched, big text nodes read."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from ecgtext.errors import FormatError
from ecgtext.io.xml_safe import child, children, parse_xml, text

SECRET = "TOP-SECRET-CONTENT"


def _write(path: Path, xml: str, encoding: str) -> Path:
    path.write_bytes(xml.encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "iso-8859-1"])
def test_external_entity_refused_in_every_encoding(tmp_path, encoding):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    decl = "" if encoding in ("utf-16-le", "utf-16-be") else f'<?xml version="1.0" encoding="{encoding}"?>\n'
    xml = (f'{decl}<!DOCTYPE RestingECG [<!ENTITY leak SYSTEM "file://{secret}">]>\n'
           "<RestingECG><PatientDemographics><PatientID>&leak;</PatientID></PatientDemographics></RestingECG>\n")
    if encoding in ("utf-16-le", "utf-16-be"):
        xml = "\ufeff" + xml  # a BOM tells the parser which UTF-16
    path = _write(tmp_path / f"xxe_{encoding}.xml", xml, encoding)
    with pytest.raises(FormatError, match="refused") as err:
        parse_xml(str(path))
    msg = str(err.value)
    assert "\n" not in msg and SECRET not in msg and path.name in msg


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_entity_expansion_refused(tmp_path, encoding):
    xml = ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">'
           '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>\n'
           "<a>&c;</a>\n")
    with pytest.raises(FormatError, match="refused"):
        parse_xml(str(_write(tmp_path / "laughs.xml", xml, encoding)))


def test_entity_words_in_a_comment_are_not_a_declaration(tmp_path):
    path = _write(tmp_path / "c.xml", "<?xml version='1.0'?><!-- no <!ENTITY here --><a><b>1</b></a>", "utf-8")
    root = parse_xml(str(path))
    assert text(root, "b") == "1"


def test_external_dtd_never_fetched(tmp_path):
    """A DOCTYPE pointing at a server (or a file) is ignored: no connection is made, nothing read."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    hits: list[object] = []

    def accept() -> None:
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    broken_dtd = tmp_path / "broken.dtd"
    broken_dtd.write_text("this is not a DTD <<<")
    for system in (f"http://127.0.0.1:{port}/restecg.dtd", str(broken_dtd)):
        path = _write(tmp_path / "dtd.xml", f'<?xml version="1.0"?>\n<!DOCTYPE RestingECG SYSTEM "{system}">\n'
                                            "<RestingECG><MuseInfo><MuseVersion>9</MuseVersion></MuseInfo>"
                                            "</RestingECG>\n", "utf-8")
        assert text(parse_xml(str(path)), "MuseInfo", "MuseVersion") == "9"
    thread.join()
    server.close()
    assert hits == []


def test_not_well_formed_is_one_line(tmp_path):
    path = _write(tmp_path / "bad.xml", "<RestingECG><a></b></RestingECG>", "utf-8")
    with pytest.raises(FormatError, match="not well-formed XML") as err:
        parse_xml(str(path))
    assert "\n" not in str(err.value) and "bad.xml" in str(err.value)


def test_text_node_over_libxml2_default_limit(tmp_path):
    """One lead's digits of a long aECG exceed libxml2's 10 MB text-node limit: still read."""
    digits = "12 " * 4_000_000  # 12 MB in one text node
    path = _write(tmp_path / "long.xml", f"<AnnotatedECG><digits>{digits}</digits></AnnotatedECG>", "utf-8")
    root = parse_xml(str(path))
    assert len(child(root, "digits").text) == len(digits)


def test_children_match_any_namespace(tmp_path):
    path = _write(tmp_path / "ns.xml", '<r xmlns="urn:hl7-org:v3" xmlns:x="urn:x"><a>1</a><x:a>2</x:a>'
                                       "<b><a>3</a></b><!-- <a>no</a> --></r>", "utf-8")
    root = parse_xml(str(path))
    assert [e.text for e in children(root, "a")] == ["1", "2"]
    assert text(root, "b", "a") == "3" and child(root, "missing", "a") is None
