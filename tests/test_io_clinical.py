"""Clinical formats: GE MUSE XML, Philips Sierra/PageWriter XML, HL7 aECG, DICOM waveform.

Reference files (../shared/data/clinical, some of unclear licence: never copied
here) are read to the values independent readers give (expected.json); real
PTB-XL records are written to DICOM and aECG here and must come back equal to
the WFDB original, as signals and as embeddings; broken files made from good ones
fail with one line naming the file.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from clinical_helpers import (
    PTBXL,
    STANDARD,
    damage_xli,
    ptbxl_counts,
    replace_in_first,
    write_aecg,
    write_dicom,
)
from conftest import SHARED_DATA, TINY_DIR

from ecgtext.errors import FormatError, InputError
from ecgtext.io import ReadOptions, expand_paths, read_ecg
from ecgtext.io.derived import derive_limb_leads
from ecgtext.io.paths import detect_format

CLINICAL = SHARED_DATA / "clinical"
VENDORED = Path(__file__).resolve().parent / "data" / "clinical"  # MIT files copied from CLINICAL
MUSE, PHILIPS = VENDORED / "muse" / "synthetic_muse.xml", VENDORED / "philips" / "129DYPRG.XML"
FILES = [
    "muse/guangxi_teaching_sinus_rhythm.xml", "muse/synthetic_muse.xml",
    "philips/129DYPRG.XML", "philips/3191723_ZZDEMOPTONLY_1-04_orig.xml", "philips/ad4d3d80-d165_1-04_orig.xml",
    "aecg/Example aECG.xml", "aecg/subject1_0.xml", "aecg/subject1_1.xml", "aecg/subject1_2.xml",
    "dicom/waveform_ecg.dcm",
]
FORMAT_OF = {"muse": "muse", "philips": "philips", "aecg": "aecg", "dicom": "dicom"}
# identifiers present in the reference files: none may reach Ecg.meta by default
IDENTIFIERS = ("00000000", "01-01-1900", "SYNTH0001", "01-01-1980", "Synthetic", "ZZDEMOPTONLY", "1950-01-01",
               "SBJ-123", "Clark", "19530508", "642341", "19710123", "Anonymous", "1112010721168bdc")


def clinical() -> Path:
    if not (CLINICAL / "expected.json").is_file():
        pytest.skip(f"{CLINICAL} not present: reference clinical files are not redistributed here")
    return CLINICAL


def expected(rel: str) -> dict:
    return json.loads((clinical() / "expected.json").read_text())["files"][rel]


@functools.cache
def reference(rel: str, include_identifiers: bool = False):
    """A reference file read once per session; never mutated."""
    return read_ecg(clinical() / rel, ReadOptions(include_identifiers=include_identifiers))


def one_line_naming(err: InputError, path) -> str:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and "Traceback" not in msg
    assert not any(name in msg for name in ("Error:", "Exception", "binascii", "int16", "index out of range"))
    return msg


# ---- reference files -------------------------------------------------------------------------------

@pytest.mark.shared
def test_every_reference_file_is_covered():
    root = clinical()
    found = sorted(str(p.relative_to(root)) for fmt in FORMAT_OF for p in (root / fmt).iterdir()
                   if p.suffix.lower() in (".xml", ".dcm"))
    assert found == sorted(FILES)


@pytest.mark.shared
@pytest.mark.parametrize("rel", FILES)
def test_reads_expected_values(rel):
    ex = expected(rel)
    path = clinical() / rel
    assert detect_format(str(path)) == FORMAT_OF[rel.split("/")[0]]
    ecg = reference(rel)
    # Philips: only the first 10 s are signal (the strip ends with a calibration pulse)
    stats = ex.get("stats_first_10s") or ex["stats"]
    n = round(10 * ex["fs"]) if "stats_first_10s" in ex else ex["n_samples"]
    assert ecg.fs == ex["fs"] and ecg.signal.shape == (12, n) and ecg.signal.dtype == np.float32
    assert sorted(ecg.leads) == sorted(STANDARD)
    assert ecg.meta["derived_leads"] == ex["derived_leads"]
    lsb = ex["lsb_mV"]
    for lead, st in stats.items():
        x = ecg.signal[ecg.leads.index(lead)].astype(np.float64)
        np.testing.assert_allclose(x[:5], st["first5"], atol=lsb, rtol=0, err_msg=f"{rel} {lead}")
        for key, got in (("mean", x.mean()), ("std", x.std()), ("min", x.min()), ("max", x.max())):
            assert abs(got - st[key]) <= lsb, (rel, lead, key, got, st[key])


@pytest.mark.shared
@pytest.mark.parametrize("rel", FILES)
def test_einthoven_goldberger_hold(rel):
    ex = expected(rel)
    ecg = reference(rel)
    s = {lead: ecg.signal[ecg.leads.index(lead)].astype(np.float64) for lead in STANDARD}
    third = np.abs(s["III"] - (s["II"] - s["I"])).max()
    augmented = np.abs(s["aVR"] + s["aVL"] + s["aVF"]).max()
    stored = ex["einthoven_stored_leads"]
    if stored is None:  # derived here: exact up to float32 rounding
        assert third < 1e-5 and augmented < 1e-5
    else:  # as stored by the cart (rounding of the residuals); 1 mV off if the pulse were included
        assert third <= stored["max_abs_III_minus_(II-I)"] + 1e-4
        assert augmented <= stored["max_abs_aVR+aVL+aVF"] + 1e-4


@pytest.mark.shared
@pytest.mark.parametrize("rel", [f for f in FILES if f.startswith("philips/")])
def test_philips_calibration_pulse_excluded(rel):
    ex = expected(rel)
    ecg = reference(rel)
    assert ecg.signal.shape[1] == 5000 and ecg.meta["calibration_excluded_samples"] == 500
    assert ex["calibration_pulse"]["start"] >= 5000  # the pulse lies entirely in what was cut
    # with the pulse, every lead would reach +1 mV at once and Einthoven would be 1 mV off
    assert np.abs(ecg.signal[ecg.leads.index("III")] - (ecg.signal[1] - ecg.signal[0])).max() < 0.02


def test_muse_median_beats_never_taken(tmp_path):
    src = MUSE.read_text(encoding="latin-1")
    assert src.index("<WaveformType>Median") < src.index("<WaveformType>Rhythm")  # Median comes first
    ecg = read_ecg(MUSE)
    assert ecg.signal.shape == (12, 5000)  # not the 600-sample median group
    only_median = tmp_path / "median_only.xml"
    start = src.index("<Waveform>", src.index("<WaveformType>Median") - 200)
    rhythm = src.index("<Waveform>", start + 10)
    end = src.index("</Waveform>", rhythm) + len("</Waveform>")
    only_median.write_text(src[:rhythm] + src[end:], encoding="latin-1")
    with pytest.raises(FormatError, match="no Rhythm waveform") as err:
        read_ecg(only_median)
    one_line_naming(err.value, only_median)


@pytest.mark.shared
def test_aecg_and_dicom_median_beats_never_taken(tmp_path):
    ecg = read_ecg(clinical() / "aecg/Example aECG.xml")  # has a REPRESENTATIVE_BEAT derivedSeries
    assert ecg.signal.shape == (12, 5000)
    import pydicom

    ds = pydicom.dcmread(clinical() / "dicom/waveform_ecg.dcm")
    labels = [g.MultiplexGroupLabel for g in ds.WaveformSequence]
    assert labels == ["RHYTHM", "MEDIAN BEAT"]
    ds.WaveformSequence = pydicom.sequence.Sequence(list(ds.WaveformSequence)[::-1])  # median first
    swapped = tmp_path / "median_first.dcm"
    ds.save_as(swapped)
    got = read_ecg(swapped)
    assert got.signal.shape == (12, 10000) and got.meta["multiplex_group"] == "RHYTHM"
    np.testing.assert_array_equal(got.signal, read_ecg(clinical() / "dicom/waveform_ecg.dcm").signal)
    ds.WaveformSequence = pydicom.sequence.Sequence([ds.WaveformSequence[0]])  # the median group only
    median_only = tmp_path / "median_only.dcm"
    ds.save_as(median_only)
    with pytest.raises(FormatError, match="no RHYTHM waveform group") as err:
        read_ecg(median_only)
    one_line_naming(err.value, median_only)


@pytest.mark.shared
@pytest.mark.parametrize("rel", FILES)
def test_identifiers_only_on_request(rel):
    ecg = reference(rel)
    shown = json.dumps(ecg.meta, default=str)
    assert "patient" not in ecg.meta
    assert not [i for i in IDENTIFIERS if i in shown], shown
    assert {"age", "sex", "acquired", "device"} <= set(ecg.meta)
    opted = reference(rel, include_identifiers=True)
    assert opted.meta["patient"] and set(opted.meta["patient"]) <= {"name", "id", "birth_date"}
    np.testing.assert_array_equal(opted.signal, ecg.signal)


@pytest.mark.shared
def test_mixed_vendor_folder_detected_by_content(tmp_path):
    """A folder of .xml from several vendors (names say nothing) plus an extension-less DICOM."""
    for i, rel in enumerate(FILES):
        suffix = "" if rel.endswith(".dcm") else ".xml"
        shutil.copy(clinical() / rel, tmp_path / f"export_{i:02d}{suffix}")
    (tmp_path / "notes.xml").write_text("<?xml version='1.0'?><note><to>ward 3</to></note>")
    listed = expand_paths([str(tmp_path)])
    assert len(listed) == len(FILES) - 1 + 1  # the extension-less DICOM is passed explicitly, not walked
    good, failed = 0, []
    for p in listed + [str(tmp_path / f"export_{FILES.index('dicom/waveform_ecg.dcm'):02d}")]:
        try:
            assert read_ecg(p).signal.shape[0] == 12
            good += 1
        except InputError as err:
            failed.append(one_line_naming(err, p))
    assert good == len(FILES)
    assert len(failed) == 1 and "XML root <note> is not an ECG format" in failed[0]


def test_vendored_muse_and_philips():
    """The two MIT reference files bundled in tests/data: values from expected.json (1 LSB)."""
    muse, philips = read_ecg(MUSE), read_ecg(PHILIPS)
    assert muse.signal.shape == philips.signal.shape == (12, 5000) and muse.fs == philips.fs == 500.0
    assert muse.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"] and philips.meta["derived_leads"] == []
    assert philips.meta["calibration_excluded_samples"] == 500
    for ecg, lsb, first3 in ((muse, 0.00488, {"I": [0.0586, 0.0537, 0.0488], "II": [0.0878, 0.083, 0.0781],
                                              "aVF": [0.0586, 0.0561, 0.0537], "V6": [0.0439, 0.039, 0.039]}),
                             (philips, 0.005, {"I": [0.24, 0.22, 0.2], "II": [0.585, 0.575, 0.555],
                                               "aVF": [0.465, 0.46, 0.455], "V6": [0.14, 0.125, 0.125]})):
        for lead, want in first3.items():
            np.testing.assert_allclose(ecg.signal[ecg.leads.index(lead), :3], want, atol=lsb, rtol=0)
    assert muse.signal[muse.leads.index("aVF")].max() == pytest.approx(0.8516, abs=0.00488)
    assert philips.signal[philips.leads.index("V6")].max() == pytest.approx(0.8, abs=0.005)


@pytest.mark.shared
def test_vendored_files_are_the_shared_ones():
    for rel in ("muse/synthetic_muse.xml", "philips/129DYPRG.XML"):
        assert (VENDORED / rel).read_bytes() == (clinical() / rel).read_bytes()


# ---- round trips with real PTB-XL records ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    import ecgtext

    return ecgtext.load_model(TINY_DIR, components="ecg")


def _features(model, path) -> np.ndarray:
    import torch

    import ecgtext

    p = ecgtext.prepare(ecgtext.read_ecg(path), model.config.preprocess)
    with torch.inference_mode():
        return model.encode_ecg(torch.from_numpy(p.windows)).numpy()


@pytest.mark.parametrize("fmt", ["dicom", "dicom-mdc", "aecg"])
def test_ptbxl_round_trip_signal_and_features(tmp_path, tiny_model, fmt):
    wfdb_path = PTBXL / "00001_hr.hea"
    counts = ptbxl_counts("00001_hr")
    if fmt.startswith("dicom"):
        out = write_dicom(tmp_path / "00001_hr.dcm", counts, 500.0, median_first=True,
                          scheme="MDC" if fmt == "dicom-mdc" else "SCPECG")
    else:
        out = write_aecg(tmp_path / "00001_hr.xml", counts, 500.0)
    original, copy = read_ecg(wfdb_path), read_ecg(out)
    assert copy.fs == 500.0 and copy.leads == original.leads == list(STANDARD)
    np.testing.assert_allclose(copy.signal, original.signal, atol=1e-6, rtol=0)  # 1 µV steps, exact
    np.testing.assert_allclose(_features(tiny_model, out), _features(tiny_model, wfdb_path), atol=1e-4, rtol=0)
    assert copy.meta["sex"] == "F" and copy.meta["acquired"].startswith("2024-01-02T03:04")
    assert "PID-778899" not in json.dumps(copy.meta) and "SUBJ-4242" not in json.dumps(copy.meta)


def test_dicom_scaling_and_only_i_ii_derives(tmp_path):
    counts = ptbxl_counts("00001_hr")
    keep = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = [STANDARD.index(k) for k in keep]
    out = write_dicom(tmp_path / "eight.dcm", counts[rows], 500.0, leads=keep, sensitivity_uv=2.5)
    ecg = read_ecg(out)
    assert ecg.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"] and ecg.meta["file_leads"] == keep
    i, ii = counts[0] * 2.5e-3, counts[1] * 2.5e-3
    np.testing.assert_allclose(ecg.signal[ecg.leads.index("aVL")], i - ii / 2, atol=1e-6)
    np.testing.assert_allclose(ecg.signal[ecg.leads.index("V6")], counts[11] * 2.5e-3, atol=1e-6)


def test_derived_leads_never_replace_stored_ones():
    sig = np.arange(24, dtype=np.float64).reshape(3, 8)
    out, names, derived = derive_limb_leads(sig, ["I", "II", "aVF"])
    assert derived == [] and names == ["I", "II", "aVF"] and out is sig
    out, names, derived = derive_limb_leads(sig, ["I", "II", "V1"])
    assert names == ["I", "II", "III", "aVR", "aVL", "aVF", "V1"] and derived == ["III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(out[2], sig[1] - sig[0])
    np.testing.assert_allclose(out[3] + out[4] + out[5], 0, atol=1e-12)


# ---- broken files: one line naming the file and the problem ----------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _broken_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file made here, expected words of the message); shared-free cases only."""
    counts = ptbxl_counts("00001_hr")
    good_aecg = write_aecg(tmp_path / "good_aecg.xml", counts, 500.0).read_text()
    dcm = write_dicom(tmp_path / "good.dcm", counts, 500.0).read_bytes()
    cases = {}
    p = tmp_path / "truncated.dcm"
    p.write_bytes(dcm[: len(dcm) * 3 // 5])
    cases["truncated DICOM"] = (p, "truncated")
    p = tmp_path / "not_ecg.xml"
    p.write_text('<?xml version="1.0"?>\n<catalog xmlns="urn:example:books"><book id="1"/></catalog>\n')
    cases["XML not an ECG"] = (p, "XML root <catalog> (namespace urn:example:books) is not an ECG format")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    p = tmp_path / "xxe.xml"
    p.write_text(good_aecg.replace(
        "<!-- written", f'<!DOCTYPE AnnotatedECG [<!ENTITY leak SYSTEM "file://{secret}">'
                       '<!ENTITY remote SYSTEM "http://127.0.0.1:9/x">]>\n<!-- written', 1)
        .replace("<id root=\"2.25.1\"/>", "<id root=\"2.25.1\"/><title>&leak;&remote;</title>", 1))
    cases["external entity"] = (p, "refused")
    p = tmp_path / "bad_digits.xml"
    p.write_text(replace_in_first(good_aecg, "digits", lambda d: d.replace(" ", " x", 3)))
    cases["aECG digits"] = (p, "digits are not a list of numbers")
    p = tmp_path / "not_dicom.dcm"
    p.write_bytes(b"\0" * 400)
    cases["DICOM without DICM"] = (p, "content is not DICOM")
    return cases


@pytest.mark.parametrize("case", ["truncated DICOM", "XML not an ECG", "external entity", "aECG digits",
                                  "DICOM without DICM"])
def test_broken_files_one_line(tmp_path, no_network, case):
    path, words = _broken_cases(tmp_path)[case]
    with pytest.raises(InputError) as err:
        read_ecg(path)
    msg = one_line_naming(err.value, path)
    assert words in msg and "TOP-SECRET" not in msg


def test_broken_clinical_files_one_line(tmp_path, no_network):
    muse = MUSE.read_text(encoding="latin-1")
    rhythm_at = muse.index("<WaveformType>Rhythm")
    bad_b64 = tmp_path / "bad_base64.xml"
    bad_b64.write_text(muse[:rhythm_at] + replace_in_first(muse[rhythm_at:], "WaveFormData",
                                                           lambda t: t[:40] + "*%" + t[42:]), encoding="latin-1")
    short = tmp_path / "short_lead.xml"
    short.write_text(muse[:rhythm_at] + replace_in_first(muse[rhythm_at:], "WaveFormData",
                                                         lambda t: "".join(t.split())[:-400]), encoding="latin-1")
    philips = PHILIPS.read_text(encoding="utf-8")
    xli = tmp_path / "damaged_xli.xml"
    xli.write_text(damage_xli(philips), encoding="utf-8")
    cases = [(bad_b64, "not valid base64"), (short, "LeadSampleCountTotal"), (xli, "damaged")]
    for path, words in cases:
        with pytest.raises(InputError) as err:
            read_ecg(path)
        assert words in one_line_naming(err.value, path)
    # the good files beside them still read
    for good in (MUSE, PHILIPS):
        shutil.copy(good, tmp_path / good.name)
    ok = [p for p in expand_paths([str(tmp_path)]) if _reads(p)]
    assert sorted(os.path.basename(p) for p in ok) == ["129DYPRG.XML", "synthetic_muse.xml"]


def _reads(path: str) -> bool:
    try:
        read_ecg(path)
    except InputError:
        return False
    return True


def test_muse_entity_expansion_refused(tmp_path, no_network):
    p = tmp_path / "laughs.xml"
    p.write_text('<?xml version="1.0"?>\n<!DOCTYPE RestingECG [<!ENTITY a "aaaaaaaaaa">'
                 '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<RestingECG>&b;</RestingECG>\n')
    assert detect_format(str(p)) == "muse"
    with pytest.raises(FormatError, match="refused") as err:
        read_ecg(p)
    one_line_naming(err.value, p)


# ---- the real CLI over one folder mixing every clinical format and WFDB ----------------------------------

OTHER_FORMATS = ["scp/Example.scp", "scp/demo.scp", "ishne/ECG_P28.01.ecg", "ishne/ECG_P28.01.ann",
                 "edf/ptbxl_00010_hr.edf", "edf/ptbxl_00020_hr.edf", "edf/ptbxl_00030_hr.edf"]


@pytest.mark.shared
def test_cli_embed_mixed_folder(tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    folder = tmp_path / "archive"
    folder.mkdir()
    # copied at test time only: some of these files may not be redistributed
    for rel in FILES + OTHER_FORMATS:
        shutil.copy(clinical() / rel, folder / rel.replace("/", "__"))
    for name in ("00001_hr.hea", "00001_hr.dat"):
        shutil.copy(PTBXL / name, folder / name)
    muse = (clinical() / "muse/synthetic_muse.xml").read_text(encoding="latin-1")
    at = muse.index("<WaveformType>Rhythm")
    (folder / "broken_base64.xml").write_text(
        muse[:at] + replace_in_first(muse[at:], "WaveFormData", lambda t: "!!" + t[2:]), encoding="latin-1")
    dcm = (clinical() / "dicom/waveform_ecg.dcm").read_bytes()
    (folder / "broken_truncated.dcm").write_bytes(dcm[: len(dcm) // 2])
    (folder / "broken_not_ecg.xml").write_text("<?xml version='1.0'?><orders><order id='1'/></orders>")
    good = len(FILES) + len(OTHER_FORMATS) - 1 + 1  # the .ann is not a recording; + the WFDB record

    out = tmp_path / "emb.parquet"
    exe = Path(sys.executable).with_name("ecgtext")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ecgtext"]
    r = subprocess.run(cmd + ["embed", str(folder), "-o", str(out), "--model", str(TINY_DIR), "-j", "0"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 1, r.stderr
    table = pq.read_table(out).to_pandas()
    assert len(table) == good and table["path"].is_unique
    assert not any("broken" in p for p in table["path"])
    assert all(len(m) == 0 for m in table["missing_leads"])  # all 12 leads everywhere (MUSE: derived)
    errors = [json.loads(line) for line in out.with_name("emb.errors.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(e["path"]) for e in errors) == \
        ["broken_base64.xml", "broken_not_ecg.xml", "broken_truncated.dcm"]
    assert all("\n" not in e["message"] for e in errors)  # the problem; the file is in "path"
    for name in ("broken_base64.xml", "broken_not_ecg.xml", "broken_truncated.dcm"):
        assert any(name in line for line in r.stderr.splitlines() if "base64" in line or "XML root" in line
                   or "truncated" in line)  # one line per broken file on stderr, naming it
    assert f"{good} embedded, 3 failed" in r.stderr


# ---- content detection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("head, expected", [
    ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG>',
     ("", "RestingECG")),
    ('<!-- comment -->\n<!-- another -->\n<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:voc="urn:hl7-org:v3/voc">',
     ("urn:hl7-org:v3", "AnnotatedECG")),
    ('<?xml version="1.0"?><hl7:AnnotatedECG xmlns:hl7="urn:hl7-org:v3">', ("urn:hl7-org:v3", "AnnotatedECG")),
    ('<?xml version="1.0"?><!DOCTYPE x [<!ELEMENT x ANY>]>\n<restingecgdata xmlns="http://www3.medical.philips.com"'
     ' status="x">', ("http://www3.medical.philips.com", "restingecgdata")),
])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_xml_root_from_first_bytes(head, expected, encoding):
    from ecgtext.io.detect import xml_root

    assert xml_root(head.encode(encoding)) == expected


def test_detection_by_content_not_name(tmp_path):
    counts = ptbxl_counts("00001_hr")
    cases = {
        "scan_0001": write_dicom(tmp_path / "scan_0001", counts, 500.0),  # PACS exports often lack a suffix
        "ecg.dat.xml": write_aecg(tmp_path / "ecg.dat.xml", counts, 500.0),
    }
    assert detect_format(str(cases["scan_0001"])) == "dicom"
    assert detect_format(str(cases["ecg.dat.xml"])) == "aecg"
    no_ns = tmp_path / "plain.xml"
    no_ns.write_text("<AnnotatedECG><component/></AnnotatedECG>")  # aECG needs its HL7 namespace
    with pytest.raises(FormatError, match="is not an ECG format") as err:
        detect_format(str(no_ns))
    one_line_naming(err.value, no_ns)
    ann = tmp_path / "rec.ann"
    ann.write_bytes(b"ANN  1.0" + b"\0" * 600)
    with pytest.raises(FormatError, match="annotation file"):
        read_ecg(ann)
    forced = read_ecg(cases["ecg.dat.xml"], ReadOptions(format="aecg", fs=250, units="V"))
    assert forced.fs == 500.0 and forced.meta["options_ignored"] == ["fs", "units"]


def test_xml_size_is_bounded(tmp_path):
    from ecgtext.io.xml_safe import parse_xml

    big = tmp_path / "big.xml"
    big.write_bytes(b"<RestingECG>" + b" " * 4096 + b"</RestingECG>")
    assert parse_xml(str(big)).tag == "RestingECG"
    with pytest.raises(FormatError, match="larger than") as err:
        parse_xml(str(big), max_bytes=1024)
    one_line_naming(err.value, big)
