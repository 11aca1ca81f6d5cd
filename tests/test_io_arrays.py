"""Header-less files (.mat, .npy/.npz, CSV): explicit options, round-trips from real records."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
from io_helpers import CHAPMAN_MAT, PTBXL, shared_data, standard_pre

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import ConfigError, FormatError, LeadError, SignalError
from ecgtext.io import ReadOptions, read_ecg
from ecgtext.preprocess import prepare

CHAPMAN = ReadOptions(fs=500, leads="standard", units="uV")


@pytest.fixture(scope="module")
def ptbxl1():
    """PTB-XL record 1 at 500 Hz: (12, 5000) float32 mV, standard lead order."""
    return read_ecg(PTBXL / "00001_hr.hea").signal


# ---- MATLAB ------------------------------------------------------------------------------

def test_chapman_mat_with_explicit_options():
    ecg = read_ecg(CHAPMAN_MAT, CHAPMAN)
    val = scipy.io.loadmat(CHAPMAN_MAT)["val"]  # (5000, 12) µV
    assert val.shape == (5000, 12)
    assert ecg.signal.shape == (12, 5000) and ecg.leads == list(STANDARD_LEADS) and ecg.fs == 500
    np.testing.assert_allclose(ecg.signal, (val.T / 1000).astype(np.float32), rtol=1e-6)
    assert ecg.meta["units"] == "uV" and ecg.meta["units_source"] == "option"


def test_chapman_microvolts_become_ptbxl_like_millivolts(ptbxl1):
    chapman = read_ecg(CHAPMAN_MAT, CHAPMAN).signal
    # per-lead peak-to-peak of a resting ECG is ~0.3-5 mV in both databases
    for sig in (chapman, ptbxl1):
        assert 0.3 < np.median(np.ptp(sig, axis=1)) < 5
    ratio = np.median(np.ptp(chapman, axis=1)) / np.median(np.ptp(ptbxl1, axis=1))
    assert 0.2 < ratio < 5


def test_chapman_without_options_says_what_is_missing():
    with pytest.raises(FormatError, match="sampling rate") as err:
        read_ecg(CHAPMAN_MAT)
    assert err.value.option == "fs" and "--" not in str(err.value)
    with pytest.raises(LeadError, match="does not name its leads") as err:
        read_ecg(CHAPMAN_MAT, ReadOptions(fs=500))
    assert err.value.option == "leads"
    with pytest.raises(SignalError, match="µV") as err:  # µV values never pass as mV
        read_ecg(CHAPMAN_MAT, ReadOptions(fs=500, leads="standard"))
    assert err.value.option == "units" and "--" not in str(err.value)


@pytest.mark.shared
def test_every_chapman_file_reads():
    files = sorted((shared_data() / "chapman" / "ECGDataDenoisedMat").glob("*.mat"))
    assert len(files) == 20
    for f in files:
        ecg = read_ecg(f, CHAPMAN)
        assert ecg.signal.shape == (12, 5000), f
        assert 0.1 < np.median(np.ptp(ecg.signal, axis=1)) < 10, f
        assert prepare(ecg, standard_pre()).windows.shape == (1, 12, 5000)


def test_cpsc2018_struct_layout(tmp_path, ptbxl1):
    path = tmp_path / "A0001.mat"
    scipy.io.savemat(path, {"ECG": {"sex": "Male", "age": 74, "data": ptbxl1.astype(np.float64)}})
    ecg = read_ecg(path)  # CPSC: 500 Hz, standard order, mV by the dataset's documentation
    assert ecg.fs == 500 and ecg.leads == list(STANDARD_LEADS)
    np.testing.assert_array_equal(ecg.signal, ptbxl1)
    assert ecg.meta["sex"] == "M" and ecg.meta["age"] == 74 and ecg.meta["layout"] == "cpsc2018"


def test_mat_v73_is_read_with_h5py(tmp_path, ptbxl1):
    path = tmp_path / "v73.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["val"] = ptbxl1 * 1000  # MATLAB's (5000, 12) µV `val`, stored column-major as (12, 5000)
    with open(path, "r+b") as fh:  # the text header that makes it a MATLAB 7.3 file
        text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 ."
        fh.write(text.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    ecg = read_ecg(path, CHAPMAN)
    np.testing.assert_allclose(ecg.signal, ptbxl1, rtol=1e-5, atol=1e-6)


def test_mat_with_several_arrays_needs_mat_key(tmp_path, ptbxl1):
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"a": ptbxl1, "b": ptbxl1 * 2})
    with pytest.raises(FormatError, match="candidate arrays") as err:
        read_ecg(path, ReadOptions(fs=500, leads="standard"))
    assert err.value.option == "mat_key"
    ecg = read_ecg(path, ReadOptions(fs=500, leads="standard", mat_key="b"))
    np.testing.assert_allclose(ecg.signal, ptbxl1 * 2)


# ---- NumPy ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["leads-first", "samples-first"])
def test_npy_round_trip_both_layouts(tmp_path, ptbxl1, layout):
    path = tmp_path / "rec.npy"
    np.save(path, ptbxl1 if layout == "leads-first" else ptbxl1.T)
    ecg = read_ecg(path, ReadOptions(fs=500, leads="standard"))  # layout guessed from 12 leads
    np.testing.assert_array_equal(ecg.signal, ptbxl1)
    assert ecg.meta["units_source"] == "assumed"


def test_npy_needs_fs_and_checks_lead_count(tmp_path, ptbxl1):
    path = tmp_path / "rec.npy"
    np.save(path, ptbxl1)
    with pytest.raises(FormatError, match="sampling rate") as err:
        read_ecg(path, ReadOptions(leads="standard"))
    assert err.value.option == "fs"
    with pytest.raises(LeadError, match="wrong lead count"):
        read_ecg(path, ReadOptions(fs=500, leads="I,II,III"))
    square = tmp_path / "square.npy"
    np.save(square, ptbxl1[:, :12])
    with pytest.raises(SignalError, match="layout") as err:  # 12 x 12: never guess
        read_ecg(square, ReadOptions(fs=500, leads="standard", units="mV"))
    assert err.value.option == "layout"
    ok = read_ecg(square, ReadOptions(fs=500, leads="standard", layout="leads-first"))
    np.testing.assert_array_equal(ok.signal, ptbxl1[:, :12])


def test_npy_adc_counts_with_gain(tmp_path, ptbxl1):
    path = tmp_path / "adc.npy"
    np.save(path, np.round(ptbxl1 * 1000).astype(np.int16))
    with pytest.raises(SignalError, match="ADC|µV"):
        read_ecg(path, ReadOptions(fs=500, leads="standard"))
    ecg = read_ecg(path, ReadOptions(fs=500, leads="standard", gain=1000))
    np.testing.assert_allclose(ecg.signal, ptbxl1, atol=1e-6)


def test_npz_states_its_own_rate_leads_and_units(tmp_path, ptbxl1):
    order = ["V6", "aVF", "I", "II", "III", "aVR", "aVL", "V1", "V2", "V3", "V4", "V5"]
    idx = [STANDARD_LEADS.index(x) for x in order]
    path = tmp_path / "rec.npz"
    np.savez(path, signal=ptbxl1[idx] * 1000, fs=np.array(500.0), leads=np.array(order),
             units=np.array("uV"))
    ecg = read_ecg(path)
    assert ecg.leads == order and ecg.fs == 500
    np.testing.assert_allclose(ecg.signal, ptbxl1[idx], rtol=1e-6)
    # reordered by name into the model's order: identical to the original record
    np.testing.assert_allclose(prepare(ecg, standard_pre()).windows[0], ptbxl1, rtol=1e-6)


# ---- CSV --------------------------------------------------------------------------------

def test_csv_with_header_and_time_column(tmp_path, ptbxl1):
    header = ["time"] + ["I", "II", "III", "AVR", "AVF", "AVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    cols = [0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]  # file stores aVF before aVL
    t = np.arange(5000) / 500
    path = tmp_path / "rec.csv"
    np.savetxt(path, np.column_stack([t, ptbxl1[cols].T]), delimiter=",", header=",".join(header),
               comments="", fmt="%.6f")
    ecg = read_ecg(path)  # rate from the time column, names from the header
    assert ecg.fs == 500.0
    assert ecg.leads == ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.testing.assert_allclose(ecg.signal, ptbxl1[cols], atol=1e-6)
    np.testing.assert_allclose(prepare(ecg, standard_pre()).windows[0], ptbxl1, atol=1e-6)


def test_csv_units_in_header_and_semicolons(tmp_path, ptbxl1):
    path = tmp_path / "uv.csv"
    header = ";".join(f"{lead} (uV)" for lead in STANDARD_LEADS)
    np.savetxt(path, ptbxl1.T * 1000, delimiter=";", header=header, comments="", fmt="%.3f")
    ecg = read_ecg(path, ReadOptions(fs=500))
    np.testing.assert_allclose(ecg.signal, ptbxl1, atol=1e-6)
    assert ecg.meta["units"] == "uV" and ecg.meta["units_source"] == "file"


def test_headerless_csv_needs_leads_with_the_right_count(tmp_path, ptbxl1):
    path = tmp_path / "eight.csv"
    np.savetxt(path, ptbxl1[:8].T, delimiter=",", fmt="%.6f")
    with pytest.raises(LeadError, match="does not name its leads") as err:
        read_ecg(path, ReadOptions(fs=500))
    assert err.value.option == "leads"
    with pytest.raises(LeadError, match="wrong lead count.*12.*8 columns"):
        read_ecg(path, ReadOptions(fs=500, leads="standard"))
    ecg = read_ecg(path, ReadOptions(fs=500, leads=list(STANDARD_LEADS[:8])))
    np.testing.assert_allclose(ecg.signal, ptbxl1[:8], atol=1e-6)


def test_csv_with_unknown_column_names_needs_a_map(tmp_path, ptbxl1):
    path = tmp_path / "ch.csv"
    np.savetxt(path, ptbxl1[:2].T, delimiter=",", header="ch1,ch2", comments="", fmt="%.6f")
    with pytest.raises(LeadError, match="'ch1', 'ch2'"):
        read_ecg(path, ReadOptions(fs=500))
    ecg = read_ecg(path, ReadOptions(fs=500, lead_map={"ch1": "I", "ch2": "II"}))
    assert ecg.leads == ["I", "II"]


def test_bad_option_values_are_config_errors():
    with pytest.raises(ConfigError):
        ReadOptions(units="furlongs")
    with pytest.raises(ConfigError):
        ReadOptions(units="adc")  # needs a gain
    with pytest.raises(ConfigError):
        ReadOptions(layout="sideways")
    with pytest.raises(ConfigError):
        ReadOptions(fs=-1)
    with pytest.raises(ConfigError):
        ReadOptions(format="xyz")
