"""Provenance travels with every output, and numbers of another origin are refused.

Embedding outputs carry the weights hash, the precision the model ran in, the
device type, the preprocessing contract and the ecgtext version; resuming with
any of them different, probing on features of other weights or precision, and
reading a damaged provenance block are one-line errors naming the field.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import CONFORMANCE, TESTDATA, TINY_DIR

from ecgtext import __version__
from ecgtext.errors import DataError, ProvenanceError
from ecgtext.evaluation.datasets.base import LabelledDataset
from ecgtext.evaluation.datasets.features import dataset_features, read_feature_parquet
from ecgtext.inference.embed import run_embed
from ecgtext.inference.engine import load_ecg_model, model_identity
from ecgtext.inference.provenance import Provenance, parquet_provenance, provenance_for

EXPECTED = json.loads((CONFORMANCE / "tiny_records_expected.json").read_text())
RECORDS = [str(TESTDATA / r.split("/")[0] / (r.split("/")[-1] + ".hea")) for r in EXPECTED["records"]]


@pytest.fixture(scope="module")
def model():
    return load_ecg_model(TINY_DIR)


@pytest.fixture(scope="module")
def features(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("prov") / "emb.parquet"
    assert run_embed(RECORDS, model, out, precision="fp32").failed == 0
    return out


def _other_weights(tiny_copy):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(tiny_copy / "model.safetensors"))  # "fine-tuned": same names, new values
    k = next(k for k in sd if k.startswith("unimodal_ecg_pooler"))
    sd[k] = sd[k] + 1e-3
    save_file(sd, str(tiny_copy / "model.safetensors"))
    return load_ecg_model(tiny_copy)


def _dataset(paths: list[str]) -> LabelledDataset:
    n = len(paths)
    split = ["train"] * (n - 3) + ["val", "test", "test"]
    Y = np.array([[i % 2, (i + 1) % 2] for i in range(n)])
    return LabelledDataset(name="mini", keys=paths, Y=Y, classes=["A", "B"], split=split, root=str(TESTDATA))


def test_embed_output_records_the_full_provenance(model, features):
    prov = parquet_provenance(features)
    ident = model_identity(TINY_DIR)
    assert prov.weights_sha256 == ident.weights_sha256 and prov.model_name == ident.name
    assert prov.precision == "fp32" and prov.device_type == "cpu" and prov.ecgtext_version == __version__
    pre = model.config.preprocess
    assert prov.preprocess["sample_rate"] == pre.sample_rate and prov.preprocess["window"] == pre.window
    assert prov.preprocess["leads"] == list(pre.leads) and prov.preprocess["units"] == "mV"
    assert {"stride", "min_coverage"} <= set(prov.preprocess)
    # "auto" is never recorded: on a CPU it resolves to fp32
    assert provenance_for(model, device="cpu", precision="auto").precision == "fp32"
    assert Provenance.from_dict(prov.to_dict(), "x") == prov  # round trip


def test_resume_with_another_precision_is_refused(model, tmp_path):
    out = tmp_path / "emb.parquet"
    run_embed(RECORDS[:2], model, out, precision="fp32")
    with pytest.raises(ProvenanceError) as e:
        run_embed(RECORDS, model, out, precision="bf16")
    err = e.value
    assert err.field == "precision" and err.value == ("fp32", "bf16") and err.option == "overwrite"
    msg = str(err)
    assert "precision" in msg and "'fp32'" in msg and "'bf16'" in msg and "\n" not in msg
    assert "--" not in msg  # the CLI adds the flag, the library does not
    assert pq.read_table(out).num_rows == 2  # nothing mixed in
    # the same precision resumes
    assert run_embed(RECORDS, model, out, precision="fp32").written == len(RECORDS) - 2


def test_resume_with_another_model_is_refused(model, tmp_path, tiny_copy):
    out = tmp_path / "emb.parquet"
    run_embed(RECORDS[:2], model, out)
    other = _other_weights(tiny_copy)
    with pytest.raises(ProvenanceError) as e:
        run_embed(RECORDS, other, out)
    assert e.value.field == "weights_sha256"
    old, new = e.value.value
    assert old == model_identity(TINY_DIR).weights_sha256 and new == model_identity(tiny_copy).weights_sha256
    assert old[:12] in str(e.value) and new[:12] in str(e.value)


def test_resume_with_another_windowing_or_version_is_refused(model, tmp_path, monkeypatch):
    out = tmp_path / "emb.parquet"
    run_embed(RECORDS[:1], model, out)
    with pytest.raises(ProvenanceError, match="preprocess.min_coverage"):
        run_embed(RECORDS, model, out, min_coverage=0.9)
    import ecgtext

    monkeypatch.setattr(ecgtext, "__version__", "99.0")
    with pytest.raises(ProvenanceError, match="ecgtext_version"):
        run_embed(RECORDS, model, out)


def test_unreadable_provenance_block_is_an_error(model, features, tmp_path):
    t = pq.read_table(features)
    meta = dict(t.schema.metadata)
    broken = tmp_path / "broken.parquet"
    pq.write_table(t.replace_schema_metadata({**meta, b"ecgtext": b"{not json"}), broken)
    with pytest.raises(ProvenanceError, match="not valid JSON"):
        read_feature_parquet(broken)
    with pytest.raises(ProvenanceError):  # and resuming onto it is refused, not overwritten
        run_embed(RECORDS, model, broken)
    block = json.loads(meta[b"ecgtext"])
    del block["provenance"]["precision"]
    damaged = tmp_path / "damaged.parquet"
    pq.write_table(t.replace_schema_metadata({**meta, b"ecgtext": json.dumps(block).encode()}), damaged)
    with pytest.raises(ProvenanceError, match="unreadable provenance block.*precision") as e:
        read_feature_parquet(damaged)
    assert e.value.field == "provenance"
    with pytest.raises(ProvenanceError, match="provenance"):
        run_embed(RECORDS, model, damaged)


def test_features_of_other_weights_or_precision_refused_unless_forced(model, features, tiny_copy):
    ds = _dataset(RECORDS)
    same = provenance_for(model, device="cpu", precision="fp32")
    assert dataset_features(ds, features=features, expect=same).X.shape == (6, 64)
    other = provenance_for(_other_weights(tiny_copy), device="cpu", precision="fp32")
    with pytest.raises(ProvenanceError) as e:
        dataset_features(ds, features=features, expect=other)
    assert e.value.field == "weights_sha256" and e.value.option == "force"
    bf16 = provenance_for(model, device="cpu", precision="bf16")
    with pytest.raises(ProvenanceError, match="precision 'fp32', this run uses 'bf16'"):
        dataset_features(ds, features=features, expect=bf16)
    forced = dataset_features(ds, features=features, expect=other, force=True)
    assert forced.X.shape == (6, 64) and any("weights_sha256 differs" in n for n in forced.notes)


def test_missing_test_features_are_an_error_unless_allowed(model, features, tmp_path):
    keys = RECORDS + [str(tmp_path / "never_embedded.hea")]  # the last one is in the test split
    ds = _dataset(keys)
    with pytest.raises(DataError, match="1 record.*test split have no features") as e:
        dataset_features(ds, features=features)
    assert e.value.option == "allow_missing" and "never_embedded" in str(e.value)
    ok = dataset_features(ds, features=features, allow_missing=True)
    assert ok.n_missing == 1 and len(ok.dataset) == 6 and any("allowed" in n for n in ok.notes)


def test_a_non_finite_embedding_is_never_written(model, tmp_path, monkeypatch):
    real = model.encode_ecg

    def nan_for_the_second(x):
        y = real(x)
        y[1] = float("nan")
        return y

    monkeypatch.setattr(model, "encode_ecg", nan_for_the_second)
    out = tmp_path / "emb.parquet"
    s = run_embed(RECORDS[:3], model, out, batch_size=8)
    assert (s.written, s.failed) == (2, 1)
    assert pq.read_table(out).column("path").to_pylist() == [RECORDS[0], RECORDS[2]]
    row = json.loads(s.errors_path.read_text())
    assert row["path"] == RECORDS[1] and "non-finite" in row["message"]
    assert np.isfinite(np.stack(pq.read_table(out).column("embedding").to_numpy(zero_copy_only=False))).all()
    monkeypatch.setattr(model, "encode_ecg", real)
    assert run_embed(RECORDS[:3], model, out).written == 1  # retried by the next run


def test_cpu_bf16_features_record_bf16(model, tmp_path):
    out = tmp_path / "bf16.parquet"
    run_embed(RECORDS[:1], model, out, precision="bf16")
    assert parquet_provenance(out).precision == "bf16"


def _manifest(tmp_path, paths: list[str]):
    import pandas as pd

    n = len(paths)
    split = ["train"] * (n - 3) + ["val", "test", "test"]
    man = tmp_path / "manifest.csv"
    pd.DataFrame({"path": paths, "labels": ["A" if i % 2 else "B" for i in range(n)], "split": split}).to_csv(
        man, index=False)
    return man


def _probe(monkeypatch, capsys, *args):
    import sys

    from ecgtext.cli import main

    monkeypatch.setattr(sys, "argv", ["ecgtext", "probe", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_probe_cli_refuses_other_weights_unless_forced(features, tiny_copy, tmp_path, monkeypatch, capsys):
    _other_weights(tiny_copy)
    man = _manifest(tmp_path, RECORDS)
    args = [man, "-d", "generic", "--features", features, "-m", tiny_copy, "--head", "sklearn",
            "--format", "json", "-o", tmp_path / "run"]
    code, out, err = _probe(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "weights_sha256" in err and err.rstrip().endswith("(use --force)")
    code, out, err = _probe(monkeypatch, capsys, *args, "--force")
    assert code == 0, err
    report = json.loads(out)
    assert any("weights_sha256 differs" in n for n in report["features"]["notes"])
    assert report["model"]["provenance"]["precision"] == "fp32"  # the JSON report carries the provenance


def test_probe_cli_missing_test_features_need_allow_missing(features, tmp_path, monkeypatch, capsys):
    import shutil

    extra = tmp_path / "00003_copy.hea"  # a real record that was never embedded, in the test split
    shutil.copy(TESTDATA / "ptbxl" / "00003_hr.hea", extra)
    shutil.copy(TESTDATA / "ptbxl" / "00003_hr.dat", tmp_path / "00003_hr.dat")
    man = _manifest(tmp_path, RECORDS + [str(extra)])
    args = [man, "-d", "generic", "--features", features, "--head", "sklearn", "--format", "json",
            "-o", tmp_path / "run"]
    code, _, err = _probe(monkeypatch, capsys, *args)
    assert code == 6 and "have no features" in err and err.rstrip().endswith("(use --allow-missing)"), err
    code, out, err = _probe(monkeypatch, capsys, *args, "--allow-missing")
    assert code == 0, err
    assert json.loads(out)["features"]["n_missing"] == 1


def test_zeroshot_results_carry_the_provenance(model):
    from ecgtext.inference.zeroshot import run_zeroshot

    labels = json.loads((CONFORMANCE / "labels_code15.json").read_text())
    out = list(run_zeroshot(RECORDS[:2], str(TINY_DIR), labels, precision="fp32"))
    rows = [r.to_dict() for r in out]
    assert all(Provenance.from_dict(d["provenance"], "row") == Provenance.from_dict(rows[0]["provenance"], "row")
               for d in rows)
    prov = rows[0]["provenance"]
    assert prov["precision"] == "fp32" and prov["device_type"] == "cpu"
    assert prov["weights_sha256"] == model_identity(TINY_DIR).weights_sha256
    assert prov["model_source"] == str(TINY_DIR) and prov["preprocess"]["window"] == model.config.preprocess.window
    json.dumps(rows, allow_nan=False)  # valid JSON, line by line
