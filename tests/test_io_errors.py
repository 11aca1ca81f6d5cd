"""Broken inputs: each gives a specific error type and one line naming the file, never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from io_helpers import MITBIH_100, PTBXL, standard_pre

from ecgtext.errors import FormatError, InputError, LeadError, MissingFileError, SignalError
from ecgtext.io import ReadOptions, expand_paths, iter_records, read_ecg
from ecgtext.preprocess import prepare


def _copy_record(src: Path, dst_dir: Path, name: str) -> Path:
    """Copy a WFDB record under a new name (header rewritten to point at the new files)."""
    text = (src.parent / f"{src.name}.hea").read_text().replace(src.name, name)
    (dst_dir / f"{name}.hea").write_text(text)
    data = (src.parent / f"{src.name}.dat").read_bytes()
    (dst_dir / f"{name}.dat").write_bytes(data)
    return dst_dir / f"{name}.hea"


def make_corpus(d: Path) -> dict[str, type[InputError]]:
    """Write the broken files into ``d``; return file name -> the error it must raise."""
    expected: dict[str, type[InputError]] = {}

    hea = _copy_record(PTBXL / "00001_hr", d, "truncated")
    data = (d / "truncated.dat").read_bytes()
    (d / "truncated.dat").write_bytes(data[: len(data) // 2])
    expected[hea.name] = SignalError

    hea = _copy_record(MITBIH_100, d, "truncated212")  # format 212: through wfdb.rdrecord
    data = (d / "truncated212.dat").read_bytes()
    (d / "truncated212.dat").write_bytes(data[:1000])
    expected[hea.name] = SignalError

    hea = _copy_record(PTBXL / "00002_hr", d, "nosignal")
    (d / "nosignal.dat").unlink()
    expected[hea.name] = MissingFileError

    (d / "garbage.hea").write_text("this is not a WFDB header\nat all\n")
    (d / "garbage.dat").write_bytes(b"\x00" * 100)
    expected["garbage.hea"] = FormatError

    (d / "binary.hea").write_bytes(bytes(range(256)))
    expected["binary.hea"] = FormatError

    hea = _copy_record(PTBXL / "00003_hr", d, "zerolen")
    hea.write_text(hea.read_text().replace("zerolen 12 500 5000", "zerolen 12 500 0"))
    expected[hea.name] = SignalError

    np.save(d / "zerolen.npy", np.zeros((12, 0), dtype=np.float32))
    expected["zerolen.npy"] = SignalError

    (d / "empty.hea").write_bytes(b"")
    expected["empty.hea"] = FormatError
    (d / "empty.npy").write_bytes(b"")
    expected["empty.npy"] = FormatError
    (d / "emptymat.mat").write_bytes(b"")
    expected["emptymat.mat"] = FormatError

    (d / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    expected["corrupt.npy"] = FormatError
    (d / "corrupt.mat").write_bytes(b"MATLAB? no." * 20)
    expected["corrupt.mat"] = FormatError
    (d / "corrupt.h5").write_bytes(b"not hdf5" * 20)
    expected["corrupt.h5"] = FormatError

    # the file says nothing about its leads; --leads names 12 for its 8 columns
    np.savetxt(d / "eightcols.csv", np.random.default_rng(0).normal(size=(5000, 8)) * 0.3,
               delimiter=",", fmt="%.4f")
    expected["eightcols.csv"] = LeadError

    (d / "nonnumeric.csv").write_text("I,II\n0.1,abc\n0.2,0.3\n")
    expected["nonnumeric.csv"] = FormatError
    return expected


BATCH_OPTIONS = ReadOptions(fs=500, leads="standard")


def _check(err: InputError, name: str) -> None:
    msg = str(err)
    assert "\n" not in msg and name in msg, msg
    assert msg.startswith(err.path) and err.path.endswith(name)


def test_each_broken_file_gives_its_error(tmp_path):
    for name, kind in make_corpus(tmp_path).items():
        with pytest.raises(InputError) as info:
            prepare(read_ecg(tmp_path / name, BATCH_OPTIONS), standard_pre())
        assert type(info.value) is kind, (name, info.value)
        _check(info.value, name)


def test_specific_messages(tmp_path):
    make_corpus(tmp_path)
    cases = {
        "truncated.hea": "signal file truncated.dat is truncated: 60000 bytes, the header needs 120000",
        "nosignal.hea": "names signal file nosignal.dat, which does not exist",
        "empty.npy": "empty file",
        "eightcols.csv": "wrong lead count: 12 lead names given but the CSV has 8 columns",
        "zerolen.hea": "zero-length signal",
    }
    for name, text in cases.items():
        with pytest.raises(InputError, match=text):
            read_ecg(tmp_path / name, BATCH_OPTIONS)


def test_missing_paths_and_unknown_extensions(tmp_path):
    with pytest.raises(MissingFileError, match="no such file"):
        read_ecg(tmp_path / "nope.hea")
    with pytest.raises(MissingFileError, match="without its header"):
        (tmp_path / "orphan.dat").write_bytes(b"\x00" * 10)
        read_ecg(tmp_path / "orphan.dat")
    (tmp_path / "scan.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(FormatError, match="unknown extension .pdf"):
        read_ecg(tmp_path / "scan.pdf")
    with pytest.raises(FormatError, match="folder"):
        read_ecg(tmp_path)


def test_nan_lead_and_nan_record(tmp_path):
    sig = read_ecg(PTBXL / "00001_hr.hea").signal.copy()
    sig[7] = np.nan
    np.save(tmp_path / "nanlead.npy", sig)
    out = prepare(read_ecg(tmp_path / "nanlead.npy", BATCH_OPTIONS), standard_pre())
    assert out.missing_leads == ["V2"] and not out.windows[0, 7].any()
    assert out.nan_fraction == pytest.approx(1 / 12)
    np.save(tmp_path / "nanrecord.npy", np.full((1, 5000), np.nan, dtype=np.float32))
    with pytest.raises(SignalError, match="nanrecord.npy: no finite values"):
        prepare(read_ecg(tmp_path / "nanrecord.npy", ReadOptions(fs=500, leads="II")), standard_pre())


def test_a_mixed_folder_goes_through_and_reports_the_bad_files(tmp_path):
    expected = make_corpus(tmp_path)
    for name in ("00001_hr", "00004_hr"):
        for ext in ("hea", "dat"):
            shutil.copy(PTBXL / f"{name}.{ext}", tmp_path / f"{name}.{ext}")
    np.save(tmp_path / "good.npy", read_ecg(PTBXL / "00002_hr.hea").signal)

    ok, errors = [], {}
    for path in expand_paths([str(tmp_path)]):
        try:
            for ecg in iter_records(path, BATCH_OPTIONS):
                ok.append(prepare(ecg, standard_pre()).windows.shape)
        except InputError as err:
            errors[Path(path).name] = err
    assert ok == [(1, 12, 5000)] * 3
    # every broken file is reported with its own error, on one line (a folder walk skips
    # header-less CSVs: only a CSV whose first line names leads counts as an ECG)
    assert set(errors) == set(expected) - {"eightcols.csv"}
    for name, err in errors.items():
        assert type(err) is expected[name], (name, err)
        _check(err, name)
