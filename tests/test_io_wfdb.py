"""WFDB records: values, lead names, units and metadata match what wfdb itself reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb
from io_helpers import CINC, MITBIH_100, PTBXL, TEST01, base_pre, shared_data

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import FormatError, LeadError
from ecgtext.io import ReadOptions, read_ecg, wfdb_reader
from ecgtext.preprocess import prepare


def wfdb_mv(record: str) -> tuple[np.ndarray, list[str]]:
    """(channels, samples) float32 mV straight from wfdb.rdrecord, and its channel names."""
    rec = wfdb.rdrecord(record)
    scale = np.array([{"mv": 1.0, "uv": 1e-3, "v": 1e3}[u.lower()] for u in rec.units])
    return (rec.p_signal * scale).T.astype(np.float32), list(rec.sig_name)


@pytest.mark.parametrize("name", ["00001_hr", "00002_hr", "00003_hr", "00004_hr", "00001_lr"])
def test_ptbxl_equals_wfdb(name):
    ecg = read_ecg(PTBXL / f"{name}.hea")
    expected, names = wfdb_mv(str(PTBXL / name))
    assert names == ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert ecg.leads == list(STANDARD_LEADS)  # AVR -> aVR, order kept as in the file
    assert ecg.meta["file_leads"] == names
    assert ecg.signal.dtype == np.float32
    np.testing.assert_array_equal(ecg.signal, expected)
    assert ecg.fs == (500.0 if name.endswith("hr") else 100.0)
    assert ecg.signal.shape == (12, int(10 * ecg.fs))


def test_header_signal_file_and_record_name_read_the_same(tmp_path):
    by_header = read_ecg(PTBXL / "00002_hr.hea")
    for given in (PTBXL / "00002_hr.dat", PTBXL / "00002_hr", str(PTBXL / "00002_hr")):
        ecg = read_ecg(given)
        assert ecg.path == str(given)
        np.testing.assert_array_equal(ecg.signal, by_header.signal)
    cinc = read_ecg(CINC / "E07500.mat")  # a .mat next to its .hea is WFDB, not plain MATLAB
    assert cinc.meta["format"].startswith("wfdb")


@pytest.mark.parametrize("name", ["E07500", "JS20000"])
def test_cinc_mat_container_values_and_metadata(name):
    ecg = read_ecg(CINC / f"{name}.hea")
    expected, names = wfdb_mv(str(CINC / name))
    np.testing.assert_array_equal(ecg.signal, expected)
    assert ecg.leads == list(STANDARD_LEADS) == names
    dx = {"E07500": ["67741000119109", "426177001"],
          "JS20000": ["284470004", "427084000", "698252002", "55930002"]}[name]
    assert ecg.meta["dx"] == dx and all(isinstance(c, str) for c in ecg.meta["dx"])
    assert (ecg.meta["age"], ecg.meta["sex"]) == {"E07500": (78, "M"), "JS20000": (84, "F")}[name]
    assert "Rx: Unknown" in ecg.meta["comments"]


def test_fast_path_equals_wfdb_rdrecord_path(monkeypatch):
    fast = read_ecg(CINC / "E07500.hea")
    monkeypatch.setattr(wfdb_reader, "FAST_FORMAT_16", False)
    slow = read_ecg(CINC / "E07500.hea")
    np.testing.assert_array_equal(fast.signal, slow.signal)
    assert fast.leads == slow.leads and fast.fs == slow.fs
    assert {k: v for k, v in fast.meta.items() if k != "format"} == \
        {k: v for k, v in slow.meta.items() if k != "format"}


def test_mitbih_needs_a_lead_map_then_gives_many_windows():
    with pytest.raises(LeadError) as err:
        read_ecg(MITBIH_100)
    assert "MLII" in str(err.value) and err.value.option == "lead_map" and str(MITBIH_100) in str(err.value)
    assert "--" not in str(err.value)

    ecg = read_ecg(MITBIH_100, ReadOptions(lead_map={"MLII": "II"}))
    expected, names = wfdb_mv(str(MITBIH_100))
    assert names == ["MLII", "V5"] and ecg.leads == ["II", "V5"]
    assert ecg.fs == 360.0 and ecg.signal.shape == (2, 650000)  # 30 min 5.6 s
    np.testing.assert_array_equal(ecg.signal, expected)
    assert (ecg.meta["age"], ecg.meta["sex"]) == (69, "M")

    pre = base_pre()
    out = prepare(ecg, pre)
    n = -(-650000 * 25 // 18)  # samples at 500 Hz
    assert out.windows.shape == (181, 12, 5000)
    assert out.starts[0] == 0 and out.starts[-1] == n - 5000  # last window ends with the record
    assert np.all(np.diff(out.starts) <= 5000)  # no gaps
    assert set(out.missing_leads) == set(STANDARD_LEADS) - {"II", "V5"}
    ii, v5, v1 = (pre.leads.index(x) for x in ("II", "V5", "V1"))
    assert np.abs(out.windows[:, ii]).max() > 0.5 and np.abs(out.windows[:, v5]).max() > 0.5
    assert not out.windows[:, v1].any()
    assert out.duration_s == pytest.approx(650000 / 360)


def test_ignore_unknown_leads_drops_them():
    ecg = read_ecg(MITBIH_100, ReadOptions(ignore_unknown_leads=True))
    assert ecg.leads == ["V5"] and ecg.meta["ignored_leads"] == ["MLII"]


def test_test01_is_an_error_unless_mapped():
    with pytest.raises(LeadError, match="'ECG 1', 'ECG 2', 'ECG 3', 'ECG 4'"):
        read_ecg(TEST01)
    ecg = read_ecg(TEST01, ReadOptions(lead_map={"ECG 1": "I", "ecg 2": "II", "ECG 3": "V1",
                                                 "ECG 4": "-"}))
    assert ecg.leads == ["I", "II", "V1"] and ecg.meta["ignored_leads"] == ["ECG 4"]
    expected, _ = wfdb_mv(str(TEST01))
    np.testing.assert_array_equal(ecg.signal, expected[:3])
    assert (ecg.meta["age"], ecg.meta["sex"]) == (25, "M")


def test_header_options_do_not_override_what_the_header_states():
    # a batch-wide --units uV (meant for Chapman files) must not rescale WFDB records
    ecg = read_ecg(PTBXL / "00001_hr.hea", ReadOptions(units="uV", fs=250))
    np.testing.assert_array_equal(ecg.signal, read_ecg(PTBXL / "00001_hr.hea").signal)
    assert ecg.fs == 500.0 and set(ecg.meta["options_ignored"]) == {"fs", "units"}


def test_microvolt_channels_are_converted(tmp_path):
    sig, _ = wfdb_mv(str(PTBXL / "00001_hr"))
    wfdb.wrsamp("uv", fs=500, units=["uV"] * 12, sig_name=list(STANDARD_LEADS),
                p_signal=(sig.T * 1000).astype(np.float64), fmt=["16"] * 12, adc_gain=[1.0] * 12,
                baseline=[0] * 12, write_dir=str(tmp_path))
    ecg = read_ecg(tmp_path / "uv.hea")
    np.testing.assert_allclose(ecg.signal, sig, atol=1e-3)  # 1 µV ADC steps
    assert ecg.meta["units"] == "uV"


def test_channels_in_unknown_units_need_the_units_option(tmp_path):
    sig, _ = wfdb_mv(str(PTBXL / "00001_hr"))
    wfdb.wrsamp("nu", fs=500, units=["NU"] * 12, sig_name=list(STANDARD_LEADS),
                p_signal=sig.T.astype(np.float64), fmt=["16"] * 12, adc_gain=[1000.0] * 12,
                baseline=[0] * 12, write_dir=str(tmp_path))
    with pytest.raises(FormatError, match="units 'NU'") as err:
        read_ecg(tmp_path / "nu.hea")
    assert err.value.option == "units"
    ecg = read_ecg(tmp_path / "nu.hea", ReadOptions(units="mV"))
    np.testing.assert_allclose(ecg.signal, sig, atol=1e-3)
    assert "options_ignored" not in ecg.meta


# ---- the wider set in ../shared/data -------------------------------------------------------

@pytest.mark.shared
def test_every_ptbxl_record_reads():
    root = shared_data() / "ptbxl"
    for rate, folder, n in (("hr", "records500", 400), ("lr", "records100", 50)):
        headers = sorted((root / folder).glob(f"*/*_{rate}.hea"))
        assert len(headers) == n
        for i, h in enumerate(headers):
            ecg = read_ecg(h)
            fs = 500.0 if rate == "hr" else 100.0
            assert ecg.fs == fs and ecg.signal.shape == (12, int(10 * fs)), h
            assert ecg.leads == list(STANDARD_LEADS), h
            span = np.ptp(ecg.signal, axis=1)
            assert 0.05 < np.median(span) < 20, h  # millivolts, not µV or V
            if i % 10 == 0:  # exact agreement with wfdb on a sample (rdrecord is slow)
                np.testing.assert_array_equal(ecg.signal, wfdb_mv(str(h)[:-4])[0])


@pytest.mark.shared
def test_every_cinc2021_record_matches_wfdb():
    headers = sorted((shared_data() / "cinc2021").glob("*.hea"))
    assert len(headers) == 25
    for h in headers:
        ecg = read_ecg(h)
        np.testing.assert_array_equal(ecg.signal, wfdb_mv(str(h)[:-4])[0])
        assert ecg.leads == list(STANDARD_LEADS) and ecg.fs == 500.0
        assert ecg.meta["dx"] and all(code.isdigit() for code in ecg.meta["dx"]), h


@pytest.mark.shared
def test_ptb_s0010_frank_leads_are_ignored():
    path = shared_data() / "physionet_misc" / "s0010_re.hea"
    ecg = read_ecg(path)
    expected, names = wfdb_mv(str(path)[:-4])
    assert names[-3:] == ["vx", "vy", "vz"] and len(names) == 15
    assert ecg.leads == list(STANDARD_LEADS) and ecg.fs == 1000.0
    assert ecg.meta["ignored_leads"] == ["vx", "vy", "vz"]
    np.testing.assert_array_equal(ecg.signal, expected[:12])
    assert (ecg.meta["age"], ecg.meta["sex"]) == (81, "F")
    out = prepare(ecg, base_pre())  # 38.4 s at 1000 Hz -> 19200 samples at 500 Hz
    assert out.starts.tolist() == [0, 5000, 10000, 14200] and not out.missing_leads


@pytest.mark.shared
def test_header_parser_agrees_with_wfdb_rdheader_on_real_headers():
    root = shared_data()
    headers = sorted(root.glob("ptbxl/records*/*/*.hea"))[::7] + sorted(root.glob("cinc2021/*.hea")) \
        + sorted(root.glob("physionet_misc/*.hea"))
    for h in headers:
        ours = wfdb_reader.parse_header(h.read_text(), str(h))
        ref = wfdb.rdheader(str(h)[:-4])
        sig = ours.signals
        assert ours.fs == ref.fs and ours.sig_len == ref.sig_len, h
        assert [s.name for s in sig] == ref.sig_name and [s.units for s in sig] == ref.units, h
        assert [s.gain for s in sig] == ref.adc_gain and [s.baseline for s in sig] == ref.baseline, h
        assert [s.file_name for s in sig] == ref.file_name, h
        assert [s.fmt for s in sig] == ref.fmt, h
        assert [s.byte_offset for s in sig] == [b or 0 for b in ref.byte_offset], h
        assert ours.comments == ref.comments, h


def test_copied_record_still_reads_after_move(tmp_path):
    for ext in ("hea", "dat"):
        shutil.copy(PTBXL / f"00003_hr.{ext}", tmp_path / f"00003_hr.{ext}")
    np.testing.assert_array_equal(read_ecg(tmp_path / "00003_hr").signal,
                                  read_ecg(PTBXL / "00003_hr").signal)


def test_multi_frequency_channels_are_resampled_never_averaged(tmp_path):
    """Lead II at 4 samples per frame (frame rate 125 Hz -> 500 Hz) carries a 100 Hz tone,
    which averaging over the frame would wipe out; lead I at 1 sample per frame is upsampled."""
    from test_wfdb_property import encode

    frames, fs = 1250, 125.0  # 10 s
    t_hi = np.arange(frames * 4) / (fs * 4)
    lead_ii = np.round(1000 * np.sin(2 * np.pi * 100 * t_hi)).astype(np.int64)  # 1 mV at gain 1000
    lead_i = np.round(500 * np.sin(2 * np.pi * 1.0 * np.arange(frames) / fs)).astype(np.int64)
    inter = np.concatenate([np.concatenate([[lead_i[k]], lead_ii[4 * k:4 * k + 4]]) for k in range(frames)])
    (tmp_path / "mf.dat").write_bytes(encode(inter, "16"))
    (tmp_path / "mf.hea").write_text(f"mf 2 {fs:g} {frames}\nmf.dat 16 1000/mV 16 0 0 0 0 I\n"
                                     "mf.dat 16x4 1000/mV 16 0 0 0 0 II\n")
    ecg = read_ecg(tmp_path / "mf.hea")
    assert ecg.fs == 500.0 and ecg.signal.shape == (2, 5000)
    assert ecg.meta["samples_per_frame"] == [1, 4] and ecg.meta["frame_rate"] == 125.0
    np.testing.assert_allclose(ecg.signal[1], lead_ii / 1000, atol=1e-6)  # the 100 Hz tone, intact
    assert np.ptp(ecg.signal[1]) > 1.9
    mid = slice(500, 4500)  # away from the filter's edges
    np.testing.assert_allclose(ecg.signal[0][mid], 0.5 * np.sin(2 * np.pi * np.arange(5000) / 500)[mid],
                               atol=5e-3)
