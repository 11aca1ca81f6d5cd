"""A corpus of bad inputs made from real records: each is one clear line, the good ones still embed.

The corpus (>= 60 bad files) is generated from the bundled real records
(PTB-XL WFDB, CinC 2021 WFDB-in-MATLAB, Chapman .mat) into CPSC-2018-style
.mat, CODE-15%-style HDF5, .npy/.npz and CSV: truncated, empty, garbage,
wrong rates, wrong lead counts, unit mix-ups, odd file names, symbolic link
loops and (when chmod is effective, i.e. not as root) unreadable files and
folders. Through ``read_ecg`` + ``prepare`` every bad file raises an
``EcgTextError`` whose one-line message names the file and the problem and no
Python class; through ``ecgtext embed`` with the tiny model every good record
is embedded, every bad file is one error line, and the exit code is 1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from io_helpers import CHAPMAN_MAT, CINC, PTBXL, base_pre, chmod_is_effective

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import EcgTextError, display_path
from ecgtext.io import read_ecg
from ecgtext.io.resample import resample
from ecgtext.preprocess import prepare

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "conformance" / "dbeta-tiny"
_CLASS_NAME = re.compile(r"\b\w*(Error|Exception|Traceback)\b|Errno")


def _hea_lines() -> list[str]:
    return (PTBXL / "00001_hr.hea").read_text().splitlines()


def _wfdb(folder: Path, name: str, lines: list[str], dat: bytes | None = None,
          encoding: str = "utf-8") -> str:
    """A WFDB record ``name`` whose header is ``lines`` (signal file renamed to ``name.dat``)."""
    fixed = [ln.replace("00001_hr.dat", f"{name}.dat").replace("00001_hr ", f"{name} ", 1) for ln in lines]
    (folder / f"{name}.hea").write_bytes(("\n".join(fixed) + "\n").encode(encoding))
    (folder / f"{name}.dat").write_bytes((PTBXL / "00001_hr.dat").read_bytes() if dat is None else dat)
    return str(folder / f"{name}.hea")


def _rec(lines, **kw):
    rec = lines[0].split()
    for i, v in kw.items():
        rec[int(i[1:])] = v
    return [" ".join(rec)] + lines[1:]


def _signal_field(lines, index: int, value: str) -> list[str]:
    out = [lines[0]]
    for ln in lines[1:]:
        parts = ln.split()
        parts[index] = value(parts[index]) if callable(value) else value
        out.append(" ".join(parts))
    return out


def build_corpus(root: Path) -> tuple[dict[str, str], list[str]]:
    """Write the corpus into ``root``: ({bad path: expected words}, [good record paths])."""
    bad: dict[str, str] = {}
    good: list[str] = []
    ptb = read_ecg(PTBXL / "00001_hr.hea").signal  # (12, 5000) mV, real
    ptb2 = read_ecg(PTBXL / "00002_hr.hea").signal
    lines = _hea_lines()
    w = root / "wfdb"
    w.mkdir()

    # ---- WFDB, from PTB-XL 00001_hr ------------------------------------------------------
    good.append(_wfdb(w, "good", lines))
    (w / "empty.hea").write_bytes(b"")
    bad[str(w / "empty.hea")] = "empty file"
    (w / "blank.hea").write_text("\n  \n")
    bad[str(w / "blank.hea")] = "empty WFDB header"
    (w / "binary.hea").write_bytes(os.urandom(300) + b"\x00")
    bad[str(w / "binary.hea")] = "binary data"
    bad[_wfdb(w, "recordonly", lines[:1])] = "header declares 12 signals but has 0 signal lines"
    bad[_wfdb(w, "n13", _rec(lines, f1="13"))] = "header declares 13 signals but has 12 signal lines"
    bad[_wfdb(w, "n11", _rec(lines, f1="11"))] = "header declares 11 signals but has 12 signal lines"
    bad[_wfdb(w, "norate", [" ".join(lines[0].split()[:2])] + lines[1:])] = "does not state a sampling rate"
    for tag, rate in (("zero", "0"), ("neg", "-500"), ("giga", "1e9"), ("milli", "0.001"), ("huge", "5e5")):
        bad[_wfdb(w, f"rate_{tag}", _rec(lines, f2=rate))] = "outside the plausible ECG range"
    bad[_wfdb(w, "rate_nan", _rec(lines, f2="nan"))] = "not a record line"
    bad[_wfdb(w, "nsig_1e9", _rec(lines, f1="1000000000"))] = "header declares 1000000000 signals"
    bad[_wfdb(w, "len_huge", _rec(lines, f3="900000000000"))] = "is truncated"
    dat = (PTBXL / "00001_hr.dat").read_bytes()
    bad[_wfdb(w, "truncated", lines, dat[: len(dat) // 2])] = "is truncated"
    bad[_wfdb(w, "emptydat", lines, b"")] = "is empty (0 bytes)"
    bad[_wfdb(w, "nodat", lines)] = "does not exist next to it"
    (w / "nodat.dat").unlink()
    bad[_wfdb(w, "fmt999", _signal_field(lines, 1, "999"))] = "storage format 999"
    bad[_wfdb(w, "fmt0", _signal_field(lines, 1, "0"))] = "not stored (format 0)"
    bad[_wfdb(w, "furlong", _signal_field(lines, 2, lambda f: f.replace("/mV", "/furlong")))] = \
        "units 'furlong'"
    bad[_wfdb(w, "undecodable", _signal_field(lines, 2, lambda f: f.replace("/mV", "/\x81V")),
              encoding="latin-1")] = "units '\\x81V'"
    bad[_wfdb(w, "mv_as_uv", _signal_field(lines, 2, lambda f: f.replace("/mV", "/µV")))] = \
        "mV data labelled µV, 1000x too small"
    bad[_wfdb(w, "uv_as_mv", _signal_field(lines, 2, lambda f: f.replace("1000.0(", "1.0(")))] = \
        "µV data labelled mV, 1000x too large"
    bad[_wfdb(w, "gain_inf", _signal_field(lines, 2, lambda f: f.replace("1000.0(", "1e999(")))] = \
        "not a finite number"
    bad[_wfdb(w, "garbage_line", lines[:3] + ["%%% garbage"] + lines[4:])] = "signal line 3"
    bad[_wfdb(w, "unknown_leads", _signal_field(lines, 8, "ECG"))] = "lead"
    bad[_wfdb(w, "dup_leads", _signal_field(lines, 8, "II"))] = "appears twice"
    (w / "orphan.dat").write_bytes(dat)
    bad[str(w / "orphan.dat")] = "without its header"
    (w / "folder.hea").mkdir()
    bad[str(w / "folder.hea")] = "is a folder"
    os.symlink("selfloop.hea", w / "selfloop.hea")
    bad[str(w / "selfloop.hea")] = "symbolic link"
    os.symlink("loop_b.npy", w / "loop_a.npy")
    os.symlink("loop_a.npy", w / "loop_b.npy")
    bad[str(w / "loop_a.npy")] = "symbolic link"
    bad[str(w / "loop_b.npy")] = "symbolic link"
    os.symlink("nothing_here.npy", w / "dangling.npy")
    bad[str(w / "dangling.npy")] = "symbolic link"
    os.symlink(".", w / "dirloop")  # a folder loop: walked once, not an error
    nan_dat = np.full(5000 * 12, -32768, dtype="<i2").tobytes()
    bad[_wfdb(w, "all_invalid", lines, nan_dat)] = "no finite values"
    short = (ptb[:, :500].T * 1000).round().astype("<i2").tobytes()
    bad[_wfdb(w, "one_second", _rec(lines, f3="500"), short)] = "shorter than"
    (w / "README.txt").write_text("not an ECG")
    bad[str(w / "README.txt")] = "unknown extension"

    # ---- CinC 2021 (WFDB header + MATLAB v4 signal file) --------------------------------------
    c = root / "cinc"
    c.mkdir()
    for ext in ("hea", "mat"):
        shutil.copy(CINC / f"E07500.{ext}", c / f"E07500.{ext}")
    good.append(str(c / "E07500.hea"))
    for name, cut in (("trunc", 0.5), ("tiny", 0.01)):
        (c / f"{name}.hea").write_text((CINC / "E07500.hea").read_text().replace("E07500", name))
        data = (CINC / "E07500.mat").read_bytes()
        (c / f"{name}.mat").write_bytes(data[: int(len(data) * cut)])
        bad[str(c / f"{name}.hea")] = "is truncated"
    (c / "offset.hea").write_text((CINC / "E07500.hea").read_text().replace("E07500", "offset")
                                  .replace("+24", "+9999999"))
    shutil.copy(CINC / "E07500.mat", c / "offset.mat")
    bad[str(c / "offset.hea")] = "is truncated"

    # ---- CPSC 2018 layout .mat (struct ECG: data 12 x samples, mV) and Chapman -----------------
    m = root / "mat"
    m.mkdir()
    scipy.io.savemat(m / "A0001.mat", {"ECG": {"data": ptb.astype(np.float64), "sex": "Male", "age": 50}})
    good.append(str(m / "A0001.mat"))
    scipy.io.savemat(m / "A_uv.mat", {"ECG": {"data": ptb.astype(np.float64) * 1000, "sex": "F", "age": 5}})
    bad[str(m / "A_uv.mat")] = "look like µV"
    scipy.io.savemat(m / "A_8leads.mat", {"ECG": {"data": ptb[:8].astype(np.float64), "sex": "M", "age": 1}})
    bad[str(m / "A_8leads.mat")] = "wrong lead count"
    data = (m / "A0001.mat").read_bytes()
    (m / "A_trunc.mat").write_bytes(data[: len(data) // 2])
    bad[str(m / "A_trunc.mat")] = "not a MATLAB .mat file"
    (m / "garbage.mat").write_bytes(os.urandom(2000))
    bad[str(m / "garbage.mat")] = "not a MATLAB .mat file"
    scipy.io.savemat(m / "two.mat", {"a": ptb, "b": ptb2})
    bad[str(m / "two.mat")] = "candidate arrays"
    scipy.io.savemat(m / "nodata.mat", {"ECG": {"sex": "M", "age": 3}})
    bad[str(m / "nodata.mat")] = "without a 'data' field"
    shutil.copy(CHAPMAN_MAT, m / "chapman.mat")
    bad[str(m / "chapman.mat")] = "sampling rate"
    scipy.io.savemat(m / "fs_bad.mat", {"ECG": {"data": ptb.astype(np.float64), "sex": "M", "age": 9},
                                        "fs": 5e5})
    bad[str(m / "fs_bad.mat")] = "outside the plausible ECG range"

    # ---- CODE-15% layout HDF5 ----------------------------------------------------------------
    h = root / "hdf5"
    h.mkdir()
    at400 = [resample(x, 500, 400) for x in (ptb, ptb2)]
    tracings = np.zeros((2, 4096, 12), np.float32)
    for i, x in enumerate(at400):
        tracings[i, 48:48 + 4000] = x.T
    with h5py.File(h / "exams.hdf5", "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.array([11, 11])  # a repeated id: two records, neither lost
    good.extend([f"{h / 'exams.hdf5'}::11", f"{h / 'exams.hdf5'}::11#2"])
    for name, rows, ids in (("empty", 0, []), ("unused", 2, [0, 0])):
        with h5py.File(h / f"{name}.hdf5", "w") as f:
            f["tracings"] = np.zeros((rows, 4096, 12), np.float32)
            f["exam_id"] = np.array(ids, dtype=np.int64)
        bad[str(h / f"{name}.hdf5")] = "holds no exams"
    with h5py.File(h / "zeros.hdf5", "w") as f:
        f["tracings"] = np.zeros((1, 4096, 12), np.float32)
        f["exam_id"] = np.array([5])
    bad[str(h / "zeros.hdf5")] = "all zeros"
    data = (h / "exams.hdf5").read_bytes()
    (h / "trunc.hdf5").write_bytes(data[:1000])
    bad[str(h / "trunc.hdf5")] = "truncated or corrupt"
    (h / "garbage.h5").write_bytes(os.urandom(5000))
    bad[str(h / "garbage.h5")] = "not an HDF5 file"
    with h5py.File(h / "micro.hdf5", "w") as f:
        f["tracings"] = tracings[:1] * 1000
        f["exam_id"] = np.array([3])
    bad[str(h / "micro.hdf5")] = "look like µV"
    with h5py.File(h / "two_sets.h5", "w") as f:
        f["a"] = ptb
        f["b"] = ptb2
    bad[str(h / "two_sets.h5")] = "candidate signal datasets"

    # ---- NumPy -------------------------------------------------------------------------------
    n = root / "numpy"
    n.mkdir()
    np.savez(n / "good.npz", signal=ptb, fs=500.0, leads=np.array(STANDARD_LEADS))
    good.append(str(n / "good.npz"))
    (n / "junk.npy").write_bytes(os.urandom(400))
    bad[str(n / "junk.npy")] = "not a NumPy"
    np.save(n / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    bad[str(n / "objects.npy")] = "Python objects"
    np.save(n / "nofs.npy", ptb)
    bad[str(n / "nofs.npy")] = "sampling rate"
    (n / "empty.npy").write_bytes(b"")
    bad[str(n / "empty.npy")] = "empty file"
    data = (n / "good.npz").read_bytes()
    (n / "trunc.npz").write_bytes(data[: len(data) // 2])
    bad[str(n / "trunc.npz")] = "npz"
    np.savez(n / "rate_giga.npz", signal=ptb, fs=1e9, leads=np.array(STANDARD_LEADS))
    bad[str(n / "rate_giga.npz")] = "outside the plausible ECG range"
    x = ptb.copy()
    x[2, 10:20] = 3e38
    np.savez(n / "fill.npz", signal=x, fs=500.0, leads=np.array(STANDARD_LEADS))
    bad[str(n / "fill.npz")] = "beyond any ECG"
    x = ptb.copy()
    x[5, 100] = np.inf
    np.savez(n / "inf.npz", signal=x, fs=500.0, leads=np.array(STANDARD_LEADS))
    bad[str(n / "inf.npz")] = "beyond any ECG"
    np.savez(n / "uv_as_mv.npz", signal=ptb * 1000, fs=500.0, leads=np.array(STANDARD_LEADS),
             units=np.array(["mV"]))
    bad[str(n / "uv_as_mv.npz")] = "µV data labelled mV, 1000x too large"
    np.savez(n / "v_as_mv.npz", signal=ptb, fs=500.0, leads=np.array(STANDARD_LEADS), units=np.array(["V"]))
    bad[str(n / "v_as_mv.npz")] = "mV data labelled V, 1000x too large"
    np.savez(n / "cube.npz", signal=np.stack([ptb, ptb2]), fs=500.0, leads=np.array(STANDARD_LEADS))
    bad[str(n / "cube.npz")] = "shape"
    np.savez(n / "text.npz", notes=np.array(["hello"]))
    bad[str(n / "text.npz")] = "npz"
    np.savez(n / "eight_names.npz", signal=ptb, fs=500.0, leads=np.array(STANDARD_LEADS[:8]))
    bad[str(n / "eight_names.npz")] = "wrong lead count"
    np.savez(n / "all_nan.npz", signal=np.full_like(ptb, np.nan), fs=500.0, leads=np.array(STANDARD_LEADS))
    bad[str(n / "all_nan.npz")] = "no finite values"

    # ---- CSV ---------------------------------------------------------------------------------
    v = root / "csv"
    v.mkdir()
    t = np.arange(ptb.shape[1]) / 500.0

    def csv(name: str, header: str, rows: np.ndarray, fmt: str = "%.6f") -> str:
        np.savetxt(v / name, rows, delimiter=",", fmt=fmt, header=header, comments="")
        return str(v / name)

    good.append(csv("good.csv", "time," + ",".join(STANDARD_LEADS), np.column_stack([t, ptb.T])))
    (v / "empty.csv").write_bytes(b"")
    bad[str(v / "empty.csv")] = "empty file"
    (v / "header_only.csv").write_text("time," + ",".join(STANDARD_LEADS) + "\n")
    bad[str(v / "header_only.csv")] = "zero-length"
    (v / "words.csv").write_text("I,II\n0.1,abc\n0.2,def\n")
    bad[str(v / "words.csv")] = "non-numeric"
    (v / "ragged.csv").write_text("I,II,III\n0.1,0.2\n0.1,0.2,0.3,0.4\n")
    bad[str(v / "ragged.csv")] = "malformed CSV: rows have different numbers of fields"
    tt = t.copy()
    tt[100:] += 0.5
    bad[csv("jumpy_time.csv", "time," + ",".join(STANDARD_LEADS), np.column_stack([tt, ptb.T]))] = \
        "not uniformly spaced"
    (v / "binary.csv").write_bytes(b"I,II\n\xff\xfe\x00\x81" + os.urandom(100))
    bad[str(v / "binary.csv")] = "decode"
    bad[csv("micro.csv", "time," + ",".join(STANDARD_LEADS), np.column_stack([t, ptb.T * 1000]))] = \
        "look like µV"
    bad[csv("ms_as_s.csv", "time," + ",".join(STANDARD_LEADS), np.column_stack([t * 1000, ptb.T]))] = \
        "outside the plausible ECG range"
    bad[csv("leads_unknown.csv", "time,Pleth,Resp", np.column_stack([t, ptb[:2].T]))] = "unknown lead"

    # ---- odd file names (good ones embed; a bad one is one escaped line) ------------------------
    o = root / "names"
    o.mkdir()
    for raw in (b"sp ace.npz", "ünïcode €.npz".encode(), b"new\nline.npz", b"caf\xe9\xff.npz",
                b"-dash.npz", b"tab\there.npz"):
        p = os.fsdecode(os.path.join(os.fsencode(str(o)), raw))
        np.savez(p, signal=ptb2, fs=500.0, leads=np.array(STANDARD_LEADS))
        good.append(p)
    # a WFDB record whose Latin-1 header names a non-UTF-8 signal file
    name = os.fsdecode(b"r\xe9c")
    (o / f"{name}.hea").write_bytes(("\n".join(ln.replace("00001_hr", "r\xe9c") for ln in lines) + "\n")
                                    .encode("latin-1"))
    (o / f"{name}.dat").write_bytes(dat)
    good.append(str(o / f"{name}.hea"))
    for raw in (b"bad\nname.npy", b"bad \xff name.npy"):
        p = os.fsdecode(os.path.join(os.fsencode(str(o)), raw))
        Path(p).write_bytes(os.urandom(300))
        bad[p] = "not a NumPy"

    # ---- permissions (only where chmod works, i.e. not as root) ------------------------------------
    if chmod_is_effective(root):
        p = root / "locked.npz"
        shutil.copy(n / "good.npz", p)
        p.chmod(0)
        bad[str(p)] = "permission denied"
        d = root / "locked_dir"
        d.mkdir()
        shutil.copy(n / "good.npz", d / "inside.npz")
        d.chmod(0)
        bad[str(d)] = "permission denied"
    return bad, good


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    bad, good = build_corpus(root)
    yield root, bad, good
    for dirpath, dirs, _ in os.walk(root):  # let pytest clean up locked folders
        for d in dirs:
            try:
                os.chmod(os.path.join(dirpath, d), 0o755)
            except OSError:
                pass


def _check_message(err: EcgTextError, path: str, words: str) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    assert display_path(path) in msg, (path, msg)
    assert words.lower() in msg.lower(), (words, msg)
    assert not _CLASS_NAME.search(msg), msg
    assert err.path is not None


def test_corpus_is_big_enough(corpus):
    _, bad, good = corpus
    assert len(bad) >= 60, len(bad)
    assert len(good) >= 10


def test_every_bad_file_is_one_clear_line_through_read_ecg(corpus):
    _, bad, _ = corpus
    pre = base_pre()
    problems = []
    for path, words in bad.items():
        try:
            prepare(read_ecg(path), pre)
        except EcgTextError as err:
            try:
                _check_message(err, path, words)
            except AssertionError as failed:
                problems.append(f"{display_path(path)}: {failed}")
        except Exception as exc:  # noqa: BLE001 - that is the bug this test is for
            problems.append(f"{display_path(path)}: raised {type(exc).__name__}: {exc}")
        else:
            problems.append(f"{display_path(path)}: read without an error")
    assert not problems, "\n".join(problems)


def test_every_good_file_reads(corpus):
    _, _, good = corpus
    pre = base_pre()
    for path in good:
        prep = prepare(read_ecg(path), pre)
        assert np.isfinite(prep.windows).all()


def test_embed_cli_embeds_the_good_and_reports_each_bad_file(corpus, tmp_path):
    import pyarrow.parquet as pq

    root, bad, good = corpus
    out = tmp_path / "emb.parquet"
    inputs = [str(root)] + sorted(bad) + sorted(good)
    argv = [sys.executable, "-m", "ecgtext", "embed", *inputs, "--model", str(TINY), "--output", str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="1000")
    run = subprocess.run(argv, capture_output=True, env=env, timeout=600)
    err = run.stderr.decode("utf-8", "replace")
    assert run.returncode == 1, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    for path in bad:
        if os.path.isdir(path) and os.access(path, os.R_OK):
            continue  # a folder argument is walked (here: empty), not read as a file
        shown = display_path(path)
        hits = [ln for ln in lines if ln.startswith(f"error: {shown}: ") or ln.startswith(f"error: {shown}::")]
        assert len(hits) == 1, (shown, hits, err[-2000:])
    table = pq.read_table(out)
    embedded = {os.fsdecode(b) for b in table.column("path_bytes").to_pylist()}
    def real(p: str) -> str:
        container, _, key = p.partition("::")
        return os.path.realpath(container) + (f"::{key}" if key else "")

    assert {real(p) for p in embedded} == {real(p) for p in good}
    assert table.num_rows == len(good)
    # resuming matches every name, odd bytes included: nothing is embedded twice
    again = subprocess.run(argv, capture_output=True, env=env, timeout=600)
    assert again.returncode == 1
    assert f"0 embedded, {len(lines)} failed, {len(good)} already there" in again.stderr.decode("utf-8", "replace")
    assert pq.read_table(out).num_rows == len(good)
