"""The shared inference engine: files -> windows -> batches -> ECG features, errors as data."""

from __future__ import annotations

import json
import shutil
import sys

import h5py
import numpy as np
import pytest
import torch
from conftest import CONFORMANCE, TESTDATA, TINY_DIR

from ecgtext.errors import ConfigError, FormatError, InputError, MissingFileError
from ecgtext.inference.engine import (
    RecordFeatures,
    embed_paths,
    iter_features,
    load_ecg_model,
    model_identity,
    resolve_device,
)
from ecgtext.io import ReadOptions, read_ecg
from ecgtext.preprocess import prepare

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())


def local(record: str) -> str:
    """tests/data copy of a ../shared/data record named in tiny_records_expected.json."""
    folder, name = record.split("/")[0], record.split("/")[-1]
    return str(TESTDATA / folder / f"{name}.hea")


RECORDS = [local(r) for r in EXPECTED["records"]]


@pytest.fixture(scope="module")
def model():
    return load_ecg_model(TINY_DIR)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Real-record copies broken the ways files break: garbage header, truncated signal, empty."""
    d = tmp_path_factory.mktemp("broken")
    (d / "garbage.hea").write_text("this is not a WFDB header\n")
    shutil.copy(TESTDATA / "ptbxl" / "00002_hr.hea", d / "00002_hr.hea")
    (d / "00002_hr.dat").write_bytes((TESTDATA / "ptbxl" / "00002_hr.dat").read_bytes()[:1000])
    (d / "empty.mat").write_bytes(b"")
    return {"garbage": str(d / "garbage.hea"), "truncated": str(d / "00002_hr.hea"),
            "empty": str(d / "empty.mat"), "missing": str(d / "nowhere.hea")}


def test_features_reproduce_the_reference(model):
    feats, keys, errors = embed_paths(RECORDS, model, batch_size=4)
    assert errors == [] and keys == RECORDS
    assert feats.dtype == np.float32 and feats.shape == (6, 64)
    np.testing.assert_allclose(feats, np.array(EXPECTED["ecg_embedding"]), atol=1e-4, rtol=0)


def test_ecg_only_load_matches_the_full_loader_and_skips_the_text_tower(model):
    from ecgtext.model.loading import load_model

    ref = load_model(TINY_DIR, components="ecg").state_dict()
    own = model.state_dict()
    assert own.keys() == ref.keys()
    assert all(torch.equal(own[k], ref[k]) for k in own)
    assert model.components == "ecg" and not hasattr(model, "language_encoder")
    assert not model.training


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_come_back_as_errors_in_input_order(model, broken, workers):
    paths = [RECORDS[0], broken["garbage"], RECORDS[1], broken["truncated"], broken["empty"],
             broken["missing"], RECORDS[2]]
    out = list(iter_features(paths, model, batch_size=2, num_workers=workers))
    assert [type(r).__name__ if isinstance(r, InputError) else "ok" for r in out][0] == "ok"
    assert [r.path for r in out] == paths  # order kept, every record accounted for
    kinds = {r.path: type(r) for r in out if isinstance(r, InputError)}
    assert set(kinds) == {broken[k] for k in ("garbage", "truncated", "empty", "missing")}
    assert issubclass(kinds[broken["missing"]], MissingFileError)
    assert issubclass(kinds[broken["empty"]], FormatError)
    good = [r for r in out if isinstance(r, RecordFeatures)]
    np.testing.assert_allclose(np.stack([r.aggregate() for r in good]),
                               np.array(EXPECTED["ecg_embedding"])[[0, 1, 2]], atol=1e-4, rtol=0)
    for err in kinds:
        assert err in str(next(r for r in out if r.path == err))  # the one-line message names the file


def test_long_record_windows_are_batched_correctly(model, tmp_path):
    # the first 65 s of MIT-BIH record 100 (2 leads, MLII and V5, 360 Hz) as a .npy
    ecg = read_ecg(TESTDATA / "physionet_misc" / "100.hea", ReadOptions(lead_map={"MLII": "II"}))
    path = str(tmp_path / "mitbih100_65s.npy")
    np.save(path, ecg.signal[:, :65 * 360])
    opts = ReadOptions(fs=360, leads="II,V5")
    (rec,) = list(iter_features([path], model, opts, batch_size=3))  # 3 does not divide 7
    p = prepare(read_ecg(path, opts), model.config.preprocess)
    assert rec.n_windows == len(p.windows) == 7  # 6 windows + one aligned to the end
    np.testing.assert_allclose(rec.starts_s, p.starts / 500.0)
    assert rec.starts_s[-1] == pytest.approx(55.0)
    assert set(rec.missing_leads) == set(model.config.preprocess.leads) - {"II", "V5"}
    with torch.inference_mode():
        direct = model.encode_ecg(torch.from_numpy(p.windows)).numpy()
    np.testing.assert_allclose(rec.features, direct, atol=1e-5, rtol=0)
    np.testing.assert_allclose(rec.aggregate("mean"), rec.features.mean(0), atol=1e-6)
    np.testing.assert_array_equal(rec.aggregate("first"), rec.features[0])


def test_hdf5_container_expands_to_one_key_per_exam(model, tmp_path):
    # a CODE-15%-style container built from two real PTB-XL records (400 Hz, 4096 samples)
    from ecgtext.io.resample import resample

    sigs = [resample(read_ecg(RECORDS[i]).signal, 500, 400) for i in (0, 1)]
    tracings = np.stack([np.pad(s.T, ((48, 48), (0, 0))) for s in sigs]).astype(np.float32)
    path = tmp_path / "exams.hdf5"
    with h5py.File(path, "w") as f:
        f["tracings"] = tracings
        f["exam_id"] = np.array([11, 22], dtype=np.int64)
    feats, keys, errors = embed_paths([str(path), RECORDS[2]], model)
    assert errors == [] and keys == [f"{path}::11", f"{path}::22", RECORDS[2]]
    assert feats.shape == (3, 64)


def test_precision_and_device_are_validated(model):
    with pytest.raises(ConfigError, match="precision"):
        embed_paths(RECORDS[:1], model, precision="fp8")
    with pytest.raises(ConfigError, match="aggregation"):
        embed_paths(RECORDS[:1], model, aggregate="median")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_bf16_on_cpu_stays_close(model):
    fp32, _, _ = embed_paths(RECORDS[:2], model, precision="fp32")
    bf16, _, _ = embed_paths(RECORDS[:2], model, precision="bf16")
    assert np.abs(fp32 - bf16).max() < 0.1  # bf16 has ~3 significant digits; features are tanh-bounded


def test_model_identity_is_the_weights_hash(tiny_copy):
    a = model_identity(TINY_DIR)
    b = model_identity(tiny_copy)
    assert a.weights_sha256 == b.weights_sha256 and len(a.weights_sha256) == 64
    assert a.short().startswith("dbeta-tiny@") or a.short().startswith(f"{TINY_DIR.name}@")
    from safetensors.torch import load_file, save_file

    sd = load_file(tiny_copy / "model.safetensors")
    sd["class_embedding"] = sd["class_embedding"] + 1
    save_file(sd, str(tiny_copy / "model.safetensors"))
    assert model_identity(tiny_copy).weights_sha256 != a.weights_sha256


def test_ecg_only_loading_imports_no_text_libraries():
    import subprocess

    code = ("import sys; from ecgtext.inference import load_ecg_model; "
            f"load_ecg_model({str(TINY_DIR)!r}); "
            "print(','.join(m for m in ('transformers', 'torch._dynamo') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_inference_fast_path_keeps_the_numbers_and_gradients():
    """The positional convolution's inference path (channels-last conv2d) = its autograd path."""
    from ecgtext.model.loading import load_model

    model = load_model(TINY_DIR, components="ecg")
    x = torch.from_numpy(np.stack([prepare(read_ecg(p), model.config.preprocess).windows[0] for p in RECORDS[:3]]))
    with torch.inference_mode():
        fast = model(x)
    with torch.enable_grad():
        slow = model(x)
    np.testing.assert_allclose(fast.numpy(), slow.detach().numpy(), atol=1e-5, rtol=0)
    model.train()
    model.encode_ecg(x).sum().backward()
    assert model.ecg_encoder.conv_pos.pos_conv[0].weight_v.grad is not None

