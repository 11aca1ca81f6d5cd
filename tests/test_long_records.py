"""Long recordings in bounded memory: streamed windows equal prepare(), the engine streams
long files, and peak memory stays far below what reading the whole record needs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from clinical_writers import write_edf, write_ishne, write_long_ishne
from conftest import REPO, TESTDATA, TINY_DIR

from ecgtext.config import PreprocessConfig
from ecgtext.errors import SignalError
from ecgtext.inference.streaming import WindowStream, iter_windows
from ecgtext.io import ReadOptions, read_ecg
from ecgtext.io import stream as stream_mod
from ecgtext.io.stream import open_lazy
from ecgtext.preprocess import prepare

STANDARD = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
PTBXL = str(TESTDATA / "ptbxl" / "00001_hr.hea")
MITBIH = str(TESTDATA / "physionet_misc" / "100.hea")  # 30 min, 360 Hz, format 212
PRE = PreprocessConfig()


@pytest.fixture(scope="module")
def counts():
    import wfdb

    return wfdb.rdrecord(str(TESTDATA / "ptbxl" / "00001_hr"), physical=False).d_signal.T.astype(np.int64)


def streamed(path, options=None, stride=None, chunk=3):
    with open_lazy(path, options) as rec:
        s = WindowStream(rec, PRE, stride=stride, chunk_windows=chunk)
        windows = np.concatenate([w for _, w in s])
        return s, windows


def assert_same_as_prepare(path, options=None, stride=None, chunk=3):
    p = prepare(read_ecg(path, options), PRE, stride=stride)
    s, windows = streamed(path, options, stride, chunk)
    np.testing.assert_array_equal(windows, p.windows)
    np.testing.assert_array_equal(s.starts, p.starts)
    assert s.missing_leads == p.missing_leads and s.flat_leads == p.flat_leads
    assert s.nan_fraction == pytest.approx(p.nan_fraction, abs=1e-12)


@pytest.mark.parametrize("stride", [None, 1000])
def test_stream_equals_prepare_on_a_real_record(stride):
    assert_same_as_prepare(PTBXL, stride=stride, chunk=1)


def test_stream_equals_prepare_across_resampling_chunks():
    # MIT-BIH 100: 360 -> 500 Hz, format 212 decoded range by range (open_wfdb_range)
    opts = ReadOptions(lead_map={"MLII": "II"})
    assert_same_as_prepare(MITBIH, opts, chunk=7)
    assert_same_as_prepare(MITBIH, opts, stride=3000, chunk=4)


def test_stream_equals_prepare_with_nan_gaps_across_chunk_edges(tmp_path):
    x = np.tile(read_ecg(PTBXL).signal, (1, 8))  # 80 s
    x[0, 4990:5030] = np.nan  # short gap across the first window edge: interpolated
    x[1, 9995:10010] = np.nan
    x[2, 100:800] = np.nan  # long gap: zeroed
    x[4, -20:] = np.nan  # at the record's end: zeroed
    x[3] = np.nan  # a dead lead: missing
    x[5] = 0.1  # a flat lead
    path = tmp_path / "gaps.npy"
    np.save(path, x)
    opts = ReadOptions(fs=500, leads="standard")
    for chunk, stride in ((1, None), (2, 2500), (5, 4000)):
        assert_same_as_prepare(str(path), opts, stride=stride, chunk=chunk)
    s, _ = streamed(str(path), opts)
    assert "aVR" in s.missing_leads and s.flat_leads == ["aVF"]


def test_stream_equals_prepare_for_holter_formats(tmp_path, counts):
    tiled = np.tile(counts, (1, 19))  # 190 s, a tail shorter than a window
    ishne = write_ishne(tmp_path / "h.ecg", tiled, STANDARD, 500)
    assert_same_as_prepare(str(ishne), chunk=4)
    edf = write_edf(tmp_path / "h.edf", [dict(label=f"ECG {n}", digital=tiled[i], fs=500, dimension="uV",
                                              phys_per_count=1.0) for i, n in enumerate(STANDARD)])
    assert_same_as_prepare(str(edf), stride=2500, chunk=5)
    eight = [STANDARD.index(n) for n in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
    ishne8 = write_ishne(tmp_path / "h8.ecg", tiled[eight], ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"], 1000)
    assert_same_as_prepare(str(ishne8), chunk=2)  # derived limb leads, 1000 -> 500 Hz
    with open_lazy(str(ishne8)) as rec:
        assert rec.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"]


def test_iter_windows_chunks_and_fallback(tmp_path):
    p = prepare(read_ecg(MITBIH, ReadOptions(lead_map={"MLII": "II"})), PRE)
    chunks = list(iter_windows(MITBIH, PRE, ReadOptions(lead_map={"MLII": "II"}), chunk_windows=50))
    assert [len(w) for _, w in chunks] == [50, 50, 50, 31]
    np.testing.assert_array_equal(np.concatenate([w for _, w in chunks]), p.windows)
    # a format that cannot be read by range (.npz) is read whole, in the same chunks
    np.savez(tmp_path / "r.npz", signal=read_ecg(PTBXL).signal, fs=500, leads=np.array(STANDARD))
    (starts, windows), = list(iter_windows(str(tmp_path / "r.npz"), PRE))
    np.testing.assert_array_equal(windows, prepare(read_ecg(PTBXL), PRE).windows)


def test_stream_errors_like_read_ecg(tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, read_ecg(PTBXL).signal[:, :1000])
    with pytest.raises(SignalError, match="shorter than"):
        streamed(str(short), ReadOptions(fs=500, leads="standard"))
    uv = tmp_path / "uv.npy"
    np.save(uv, read_ecg(PTBXL).signal * 1000)  # µV stored, mV assumed
    with pytest.raises(SignalError, match="units"):
        open_lazy(str(uv), ReadOptions(fs=500, leads="standard"))
    dead = tmp_path / "dead.npy"
    np.save(dead, np.full((12, 6000), np.nan, dtype=np.float32))
    with pytest.raises(SignalError, match="no finite values"):
        streamed(str(dead), ReadOptions(fs=500, leads="standard"))


def test_engine_streams_long_records_with_the_same_features(tmp_path, counts, monkeypatch):
    from ecgtext.inference import engine
    from ecgtext.inference.engine import iter_features, load_ecg_model

    long = write_ishne(tmp_path / "long.ecg", np.tile(counts, (1, 18)), STANDARD, 500)  # 3 min
    model = load_ecg_model(TINY_DIR)
    monkeypatch.setattr(stream_mod, "STREAM_MIN_BYTES", 1 << 40)  # whole-record path
    (whole,) = list(iter_features([str(long)], model, batch_size=7))
    monkeypatch.setattr(stream_mod, "STREAM_MIN_BYTES", 0)  # everything streams
    opened = []
    real = engine._open_streamed
    monkeypatch.setattr(engine, "_open_streamed", lambda item: opened.append(item.path) or real(item))
    got = list(iter_features([PTBXL, str(long), str(tmp_path / "missing.ecg")], model, batch_size=7))
    assert opened == [PTBXL, str(long), str(tmp_path / "missing.ecg")]
    assert got[1].n_windows == whole.n_windows == 18
    np.testing.assert_allclose(got[1].features, whole.features, atol=1e-5)
    np.testing.assert_array_equal(got[1].starts_s, whole.starts_s)
    assert got[1].duration_s == whole.duration_s and got[1].missing_leads == whole.missing_leads == []
    assert got[0].n_windows == 1 and str(tmp_path / "missing.ecg") in str(got[2])


_MEASURE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from ecgtext.config import PreprocessConfig
    from ecgtext.inference.streaming import WindowStream
    from ecgtext.io.stream import open_lazy
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "embed":
        from ecgtext.inference.engine import embed_paths, load_ecg_model
        model = load_ecg_model(sys.argv[3])
        embed_paths([sys.argv[4]], model)  # warm up: first-batch allocations are not the record's
    else:
        import scipy.signal  # noqa: F401 - imported before the baseline, as the engine has it
        with open_lazy(sys.argv[4]) as rec:  # warm up on a short record
            list(WindowStream(rec, PreprocessConfig()))
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    try:  # reset the peak so earlier peaks (imports, warm-up) do not hide the measured one
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base, peak_of = status("VmRSS"), lambda: status("VmHWM")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_of = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "embed":
        feats, keys, errs = embed_paths([path], model, batch_size=32)
        assert not errs, errs
    else:
        with open_lazy(path) as rec:
            n = sum(len(w) for _, w in WindowStream(rec, PreprocessConfig()))
    peak = peak_of()
    print(json.dumps({"delta_mb": (peak - base) / 1024, "base_mb": base / 1024}))
""")


def _peak_delta_mb(mode: str, path, warm) -> float:
    """Peak resident memory (MB) added by streaming ``path``, measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, mode, str(path), str(TINY_DIR), str(warm)],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["delta_mb"]


def _holters(tmp_path, counts, hours):
    return [write_long_ishne(tmp_path / f"{h}h.ecg", counts, STANDARD, 500, hours=h) for h in hours]


def test_long_record_memory_is_bounded(tmp_path, counts):
    """Windows of a 2-hour 12-lead 500 Hz Holter come with a flat memory peak: the 1-hour
    and 2-hour files peak alike, far below the ~330 MB a whole-record read needs for 2 h
    (the signal and its windows in float32, before any copy)."""
    warm = write_ishne(tmp_path / "warm.ecg", np.tile(counts, (1, 30)), STANDARD, 500)
    one, two = _holters(tmp_path, counts, (1.0, 2.0))
    naive_mb = 2 * (2 * 3600 * 500) * 12 * 4 / 2 ** 20
    d1, d2 = _peak_delta_mb("windows", one, warm), _peak_delta_mb("windows", two, warm)
    assert d2 < naive_mb / 4, (d2, naive_mb)
    assert abs(d2 - d1) < 25, (d1, d2)  # does not grow with the recording


@pytest.mark.slow
def test_long_record_embedding_memory_is_bounded(tmp_path, counts):
    """The same through the engine and the (tiny) model, end to end."""
    one, two = _holters(tmp_path, counts, (1.0, 2.0))
    naive_mb = 2 * (2 * 3600 * 500) * 12 * 4 / 2 ** 20
    d1, d2 = _peak_delta_mb("embed", one, PTBXL), _peak_delta_mb("embed", two, PTBXL)
    # the engine adds a fixed ~50-100 MB (batches, activations, allocator slack) whatever the
    # length, so the bound is on growth; the peak itself only has to stay far below naive
    assert d2 < naive_mb / 2, (d2, naive_mb)
    assert abs(d2 - d1) < 40, (d1, d2)  # does not grow with the recording
