"""HDF5 in the CODE-15% layout, built from real PTB-XL records."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from io_helpers import PTBXL, standard_pre

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import FormatError, MissingFileError, SignalError
from ecgtext.io import ReadOptions, iter_records, list_records, read_ecg
from ecgtext.io.resample import resample
from ecgtext.preprocess import prepare

IDS = [1169160, 2873686, 168405, 271011]


def _centre(x: np.ndarray, n: int = 4096) -> np.ndarray:
    """(samples, 12) -> (4096, 12) with CODE-15's symmetric zero padding."""
    pad = n - x.shape[0]
    return np.pad(x, ((pad // 2, pad - pad // 2), (0, 0)))


@pytest.fixture(scope="module")
def code15(tmp_path_factory):
    """exams.hdf5 like CODE-15%: 3 ten-second exams, one 7 s exam, one unused zero row."""
    originals = [read_ecg(PTBXL / f"0000{i}_hr.hea").signal for i in (1, 2, 3, 4)]
    at400 = [resample(x, 500, 400) for x in originals]  # (12, 4000) each
    at400[3] = at400[3][:, :2800]  # a 7 s exam
    tracings = np.stack([_centre(x.T) for x in at400] + [np.zeros((4096, 12))]).astype(np.float32)
    path = tmp_path_factory.mktemp("code15") / "exams_part0.hdf5"
    with h5py.File(path, "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.array(IDS + [0], dtype=np.int64)
    return path, originals, at400


def test_list_records_is_one_key_per_exam(code15):
    path, _, _ = code15
    assert list_records(path) == [f"{path}::{i}" for i in IDS]  # the exam_id 0 row is unused


def test_exams_round_trip_without_padding(code15):
    path, _, at400 = code15
    ecgs = list(iter_records(path))
    assert [e.meta["exam_id"] for e in ecgs] == IDS
    for ecg, x in zip(ecgs, at400):
        assert ecg.fs == 400.0 and ecg.leads == list(STANDARD_LEADS)
        assert ecg.signal.shape == x.shape  # 4000 or 2800 samples: padding stripped
        np.testing.assert_array_equal(ecg.signal, x.astype(np.float32))
    assert ecgs[3].meta["padding_removed"] == [648, 648]
    assert ecgs[0].path == f"{path}::{IDS[0]}"


def test_code15_exam_becomes_the_original_500hz_record(code15):
    path, originals, _ = code15
    ecg = read_ecg(f"{path}::{IDS[1]}")
    out = prepare(ecg, standard_pre())
    assert out.windows.shape == (1, 12, 5000)  # 10 s at 400 Hz -> exactly one 10 s window
    for lead in range(12):
        r = np.corrcoef(out.windows[0, lead, 50:-50], originals[1][lead, 50:-50])[0, 1]
        assert r > 0.99, STANDARD_LEADS[lead]
    short = prepare(read_ecg(f"{path}::{IDS[3]}"), standard_pre())
    assert short.windows.shape == (1, 12, 5000) and not short.windows[0, :, 3500:].any()


def test_container_with_many_exams_needs_a_key(code15):
    path, _, _ = code15
    with pytest.raises(FormatError, match=r"holds 4 records.*::"):
        read_ecg(path)
    with pytest.raises(MissingFileError, match="no exam '42'"):
        read_ecg(f"{path}::42")


def test_units_option_overrides_the_mv_assumption(code15, tmp_path):
    path, _, at400 = code15
    micro = tmp_path / "exams_uv.hdf5"  # the same exams stored in µV
    with h5py.File(path) as src, h5py.File(micro, "w") as f:
        f["tracings"] = src["tracings"][()] * 1000
        f["exam_id"] = src["exam_id"][()]
    with pytest.raises(SignalError, match="look like µV") as err:
        read_ecg(f"{micro}::{IDS[0]}")
    assert err.value.option == "units"
    ecg = read_ecg(f"{micro}::{IDS[0]}", ReadOptions(units="uV"))
    np.testing.assert_allclose(ecg.signal, at400[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(SignalError, match="mV data labelled V, 1000x too large"):
        read_ecg(f"{path}::{IDS[0]}", ReadOptions(units="V"))  # a wrong unit is never believed


def test_all_zero_exam_is_a_signal_error(tmp_path):
    path = tmp_path / "zeros.hdf5"
    with h5py.File(path, "w") as f:
        f["tracings"] = np.zeros((1, 4096, 12), dtype=np.float32)
        f["exam_id"] = np.array([5])
    with pytest.raises(SignalError, match="all zeros"):
        read_ecg(path)


def test_generic_hdf5_states_rate_and_leads_in_attributes(tmp_path):
    sig = read_ecg(PTBXL / "00002_hr.hea").signal
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("ecg", data=sig)
        ds.attrs["fs"] = 500.0
        ds.attrs["leads"] = [s.encode() for s in STANDARD_LEADS]
    ecg = read_ecg(path)
    assert ecg.path == str(path) and ecg.fs == 500.0 and list_records(path) == [str(path)]
    np.testing.assert_array_equal(ecg.signal, sig)


def test_repeated_exam_ids_are_keyed_uniquely(code15, tmp_path):
    path, _, at400 = code15
    dup = tmp_path / "dup.hdf5"
    with h5py.File(path) as src, h5py.File(dup, "w") as f:
        f["tracings"] = src["tracings"][:3]
        f["exam_id"] = np.array([7, 7, 9])
    keys = list_records(dup)
    assert keys == [f"{dup}::7", f"{dup}::7#2", f"{dup}::9"]
    recs = list(iter_records(dup))
    assert [r.path for r in recs] == keys and [r.meta["row"] for r in recs] == [0, 1, 2]
    assert recs[1].meta["exam_id"] == 7
    np.testing.assert_allclose(read_ecg(keys[1]).signal, at400[1], rtol=1e-6)  # not the first exam again


@pytest.mark.parametrize("rows", [0, 2])
def test_hdf5_without_exams_is_reported(tmp_path, rows):
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f["tracings"] = np.zeros((rows, 4096, 12), dtype=np.float32)
        f["exam_id"] = np.zeros(rows, dtype=np.int64)
    for call in (list_records, lambda p: list(iter_records(p)), read_ecg):
        with pytest.raises(SignalError, match="holds no exams"):
            call(path)
