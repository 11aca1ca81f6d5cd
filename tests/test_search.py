"""Search and index: results equal a brute-force computation over the stored features
(text -> ECG, ECG -> ECG, ECG -> report) for every exact index kind; scores equal
zero-shot's; other models are refused; exact search honours its block size; bad
inputs get one-line errors."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TESTDATA, TINY_DIR
from typer.testing import CliRunner

from ecgtext.inference.index import (
    IndexFileError,
    IndexOptions,
    ModelMismatchError,
    build_index,
    faiss_available,
    open_embeddings,
)
from ecgtext.inference.search import (
    QueryError,
    SearchOptions,
    ecg_features,
    exact_search,
    read_query_file,
    search,
    text_features,
)
from ecgtext.inference.zeroshot import score

RECORDS = [str(TESTDATA / "ptbxl" / f"{i:05d}_hr.hea") for i in (1, 2, 3, 4)]
QUERIES = ["sinusrhythmus normales ekg", "Atrial fibrillation", "linkstyp t abnormal"]
REPORTS = ["sinusrhythmus normales ekg", "sinusbradykardie sonst normales ekg", "vorhofflimmern",
           "sinusrhythmus linkstyp t abnormal", "sinusrhythmus periphere niederspannung",
           "sinustachykardie", "linksschenkelblock", "rechtsschenkelblock"]
KINDS = ["parquet", "numpy"] + (["flat"] if faiss_available() else [])
needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss not installed (extra ecgtext[index])")


def tiny_meta(sha: str | None = None, modality: str = "ecg") -> dict:
    from ecgtext.inference.engine import model_identity

    ident = model_identity(TINY_DIR)
    sha = sha or ident.weights_sha256
    return {"model": f"{ident.name}@{sha[:12]}", "model_name": ident.name, "model_sha256": sha,
            "embed_dim": 64, "modality": modality}


def write_set(path, X: np.ndarray, meta: dict, **cols) -> str:
    """A Parquet file shaped like an ``embed`` output (path + embedding + ecgtext metadata)."""
    data = {"path": [f"/data/rec{i:05d}.hea" for i in range(len(X))], **cols,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1])}
    t = pa.table(data).replace_schema_metadata({b"ecgtext": json.dumps(meta).encode()})
    pq.write_table(t, path)
    return str(path)


def brute(X: np.ndarray, Q: np.ndarray, k: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Independent top-k: full (M, N) score matrix, stable sort by score, then row."""
    S = score(X, Q, how).T
    order = np.argsort(-S.astype(np.float64), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(S, order, 1), order


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(7)
    # clustered like real embeddings, with varied norms (raw and cosine rankings differ)
    centres = rng.normal(size=(12, 64))
    X = centres[rng.integers(0, 12, 400)] + 0.6 * rng.normal(size=(400, 64))
    return (X * rng.uniform(0.3, 2.0, size=(400, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def sets(tmp_path_factory, features):
    d = tmp_path_factory.mktemp("sets")
    src = write_set(d / "emb.parquet", features, tiny_meta(), group=[f"g{i % 5}" for i in range(len(features))])
    out = {"parquet": src, "numpy": str(build_index(src, d / "np.index", IndexOptions(kind="numpy")).out)}
    if faiss_available():
        out["flat"] = str(build_index(src, d / "flat.index", IndexOptions(kind="flat")).out)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["raw", "cosine", "softmax"])
def test_text_to_ecg_equals_brute_force(sets, features, kind, how):
    res = search(sets[kind], texts=QUERIES, model=TINY_DIR, options=SearchOptions(k=7, how=how))
    Q = text_features(TINY_DIR, QUERIES)
    S, I = brute(features, Q, 7, how)
    assert res.score_name == how and res.n == len(features)
    for qi, q in enumerate(QUERIES):
        hits = [h for h in res.hits if h.query == q]
        assert [h.rank for h in hits] == list(range(1, 8))
        assert [h.row for h in hits] == I[qi].tolist()
        assert [h.path for h in hits] == [f"/data/rec{r:05d}.hea" for r in I[qi]]
        np.testing.assert_allclose([h.score for h in hits], S[qi], rtol=1e-6, atol=1e-6)


def test_query_features_are_zeroshot_label_features():
    from ecgtext.inference.zeroshot import label_features

    ref = label_features(TINY_DIR, {q: q for q in QUERIES}).numpy()
    np.testing.assert_array_equal(text_features(TINY_DIR, QUERIES), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_ecg_to_ecg_is_cosine_brute_force(sets, features, kind):
    res = search(sets[kind], ecgs=RECORDS[:2], model=TINY_DIR, options=SearchOptions(k=5, how="raw"))
    keys, Q, errs = ecg_features(TINY_DIR, RECORDS[:2])
    assert not errs and res.score_name == "cosine"  # within a modality: cosine whatever --score says
    S, I = brute(features, Q, 5, "cosine")
    for qi, key in enumerate(keys):
        hits = [h for h in res.hits if h.query == key]
        assert [h.row for h in hits] == I[qi].tolist()
        np.testing.assert_allclose([h.score for h in hits], S[qi], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def report_set(tmp_path_factory):
    import pandas as pd

    from ecgtext.inference.text_embed import run_embed_texts

    d = tmp_path_factory.mktemp("reports")
    table = d / "reports.csv"
    pd.DataFrame({"report": REPORTS[:3] + [""] + REPORTS[3:],
                  "report_id": [f"r{i}" for i in range(len(REPORTS) + 1)]}).to_csv(table, index=False)
    summary = run_embed_texts(table, TINY_DIR, d / "reports.parquet", text_column="report", id_column="report_id")
    assert summary.rows == len(REPORTS) and summary.skipped_empty == 1
    return summary.output


def test_text_embeddings_as_data(report_set):
    from ecgtext.hub.load import load_model

    t = pq.read_table(report_set)
    meta = json.loads(t.schema.metadata[b"ecgtext"])
    assert meta["modality"] == "text" and meta["model_sha256"] == tiny_meta()["model_sha256"]
    assert "provenance" in meta and meta["provenance"]["weights_sha256"] == meta["model_sha256"]
    assert t.column("text").to_pylist() == REPORTS
    assert t.column("source_row").to_pylist() == [0, 1, 2, 4, 5, 6, 7, 8]  # the empty row 3 skipped
    X = np.asarray(t.column("embedding").to_pylist(), np.float32)
    ref = load_model(TINY_DIR, components="all").encode_texts(REPORTS).detach().numpy()
    np.testing.assert_allclose(X, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("as_index", [False, True])
def test_ecg_to_report_equals_brute_force(report_set, tmp_path, as_index):
    target = build_index(report_set, tmp_path / "rep.index").out if as_index else report_set
    es = open_embeddings(target)
    assert es.modality == "text"
    res = search(target, ecgs=RECORDS, model=TINY_DIR, options=SearchOptions(k=4), columns=["report_id"])
    keys, Q, _ = ecg_features(TINY_DIR, RECORDS)
    S, I = brute(np.array(es.X), Q, 4, "raw")
    for qi, key in enumerate(keys):
        hits = [h for h in res.hits if h.query == key]
        assert [h.text for h in hits] == [REPORTS[r] for r in I[qi]]
        assert all(h.extra["report_id"].startswith("r") for h in hits)
        np.testing.assert_allclose([h.score for h in hits], S[qi], rtol=1e-6, atol=1e-6)


def test_text_search_scores_are_zeroshot_scores(tmp_path):
    from ecgtext.inference.embed import run_embed
    from ecgtext.inference.zeroshot import run_zeroshot

    run_embed(RECORDS, TINY_DIR, tmp_path / "emb.parquet")
    res = search(build_index(tmp_path / "emb.parquet", tmp_path / "idx").out, texts=QUERIES, model=TINY_DIR,
                 options=SearchOptions(k=len(RECORDS)))
    zs = {r.path: r.scores for r in run_zeroshot(RECORDS, TINY_DIR, {q: q for q in QUERIES})}
    for h in res.hits:
        assert h.score == pytest.approx(zs[h.path][h.query], rel=1e-5, abs=1e-6)


def test_other_model_is_refused(tmp_path, features):
    other = write_set(tmp_path / "other.parquet", features, tiny_meta(sha="0" * 64))
    with pytest.raises(ModelMismatchError) as err:
        search(other, texts=["x"], model=TINY_DIR)
    msg = str(err.value)
    assert "\n" not in msg and "dbeta-tiny@000000000000" in msg and err.value.option == "model"
    idx = build_index(other, tmp_path / "other.index").out  # the provenance travels into the index
    with pytest.raises(ModelMismatchError):
        search(idx, ecgs=RECORDS[:1], model=TINY_DIR)


class Spy:
    """An (N, D) array that records how many rows each read asks for."""

    def __init__(self, X):
        self.X, self.shape, self.reads = X, X.shape, []

    def __getitem__(self, item):
        out = self.X[item]
        self.reads.append(len(out))
        return out


def test_exact_search_reads_in_blocks(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(120_000, 32))
    for i in range(0, len(X), 20_000):
        X[i:i + 20_000] = rng.normal(size=(20_000, 32))
    X.flush()
    X = np.load(path, mmap_mode="r")  # 15 MB on disk
    Q = rng.normal(size=(3, 32)).astype(np.float32)
    spy = Spy(X)
    tracemalloc.start()
    S, I = exact_search(spy, Q, 10, "raw", block_size=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert max(spy.reads) == 4096 and sum(spy.reads) == len(X)
    assert peak < 4 * 2**20, peak  # NumPy-side memory: a few blocks, never the 15 MB set
    S2, I2 = brute(np.asarray(X), Q, 10, "raw")
    assert (I == I2).all()
    np.testing.assert_allclose(S, S2, rtol=1e-6)


def test_ties_keep_row_order():
    X = np.ones((50, 4), np.float32)
    S, I = exact_search(X, np.ones((1, 4), np.float32), 5, "raw", block_size=7)
    assert I[0].tolist() == [0, 1, 2, 3, 4]


@needs_faiss
def test_ivfpq_candidates_rescored_exactly(tmp_path, features):
    rng = np.random.default_rng(1)
    X = np.concatenate([features + 0.05 * rng.normal(size=features.shape).astype(np.float32) for _ in range(10)])
    src = write_set(tmp_path / "many.parquet", X, tiny_meta())
    s = build_index(src, tmp_path / "ivf", IndexOptions(kind="ivfpq", nlist=32, pq_m=16, threads=1))
    assert s.kind == "ivfpq" and s.params["nlist"] == 32
    es = open_embeddings(s.out)
    Q = text_features(TINY_DIR, QUERIES)
    res = search(es, texts=QUERIES, model=TINY_DIR, options=SearchOptions(k=10))
    S, I = brute(X, Q, 10, "raw")
    for qi, q in enumerate(QUERIES):
        hits = [h for h in res.hits if h.query == q]
        exact = score(X[[h.row for h in hits]], Q[qi:qi + 1], "raw")[:, 0]
        np.testing.assert_allclose([h.score for h in hits], exact, rtol=1e-6)  # scores are exact
        assert len({h.row for h in hits} & set(I[qi].tolist())) >= 8  # recall@10 vs exact


def test_k_above_size_is_clamped(sets, features):
    res = search(sets["numpy"], texts=QUERIES[:1], model=TINY_DIR, options=SearchOptions(k=10_000))
    assert len(res.hits) == len(features)


def test_bad_inputs_are_one_line_errors(tmp_path, features):
    (tmp_path / "junk.parquet").write_text("not parquet")
    empty = write_set(tmp_path / "empty.parquet", features[:0], tiny_meta())
    for target in (tmp_path / "junk.parquet", tmp_path / "missing.parquet", empty):
        with pytest.raises(IndexFileError) as err:
            open_embeddings(target)
        assert "\n" not in str(err.value) and str(target) in str(err.value)
    with pytest.raises(IndexFileError):
        build_index(empty, tmp_path / "empty.index")
    bad = build_index(write_set(tmp_path / "ok.parquet", features[:10], tiny_meta()), tmp_path / "ok.index").out
    (bad / "index.json").write_text("{")
    with pytest.raises(IndexFileError, match="unreadable"):
        open_embeddings(bad)
    (tmp_path / "q.txt").write_text("# only a comment\n\n")
    with pytest.raises(QueryError, match="no queries"):
        read_query_file(tmp_path / "q.txt")
    with pytest.raises(QueryError):
        search(tmp_path / "ok.parquet", model=TINY_DIR)


def test_cli_index_search_and_plots(tmp_path, sets, report_set):
    from ecgtext.cli import app
    from ecgtext.inference.embed import run_embed

    runner = CliRunner()
    run_embed(RECORDS, TINY_DIR, tmp_path / "emb.parquet")
    r = runner.invoke(app, ["index", str(tmp_path / "emb.parquet"), "-o", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["search", str(tmp_path / "idx"), "-t", "vorhofflimmern", "-k", "2", "-f", "jsonl",
                            "--plot", str(tmp_path / "plots"), "--columns", "fs"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["rank"] for x in rows] == [1, 2] and {"path", "score", "fs"} <= set(rows[0])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"q01-r0{x['rank']}-{x['path'].rsplit('/', 1)[1].replace('.hea', '.png')}" for x in rows)
    r = runner.invoke(app, ["search", sets["parquet"], "-t", "x", "-m", str(TINY_DIR), "-k", "3", "-f", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("query,rank,path")
    # refusals are one line with the flag that fixes them, exit code non-zero
    other = write_set(tmp_path / "other.parquet", np.ones((3, 64), np.float32), tiny_meta(sha="f" * 64))
    r = runner.invoke(app, ["search", other, "-t", "x", "-m", str(TINY_DIR)])
    assert r.exit_code != 0 and "use --model" in r.output and "Traceback" not in r.output
    (tmp_path / "q.txt").write_text("\n")
    r = runner.invoke(app, ["search", str(tmp_path / "idx"), "--text-file", str(tmp_path / "q.txt")])
    assert r.exit_code == 2 and "holds no queries" in r.output


def test_cli_embed_texts(tmp_path):
    from ecgtext.cli import app

    (tmp_path / "r.csv").write_text("id,report\n1,sinusrhythmus normales ekg\n2,vorhofflimmern\n")
    r = CliRunner().invoke(app, ["embed", "--texts", str(tmp_path / "r.csv"), "--text-column", "report",
                                 "--id-column", "id", "-m", str(TINY_DIR), "-o", str(tmp_path / "r.parquet")])
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "r.parquet")
    assert t.column("id").to_pylist() == ["1", "2"] and t.schema.field("embedding").type.list_size == 64
    r = CliRunner().invoke(app, ["embed", "--texts", str(tmp_path / "r.csv"), "--text-column", "nope",
                                 "-m", str(TINY_DIR), "-o", str(tmp_path / "r2.parquet")])
    assert r.exit_code != 0 and "no column nope" in r.output and "use --text-column" in r.output
