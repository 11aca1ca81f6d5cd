"""Pretraining data: ECG-report pairs, report normalisation, the ECG dataset,
the per-rank batch sampler and MLM masking.

Data flow: a pair list (manifest / PTB-XL / MIMIC-IV-ECG) -> :class:`ShardedBatchSampler`
(indices per rank, per epoch) -> :class:`PairDataset` in DataLoader workers
(read -> crop -> ``prepare`` -> lead masking) -> :func:`collate_ecgs` -> the trainer,
which draws N3S negatives and MLM masks for the batch's reports in the main process.

Every random choice is keyed: per-record draws (crop start, lead masking) come
from ``derive_seed(seed, epoch, index)``, so they are the same with 0 or 8
workers and after a resume.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError, EcgTextError

# Characters stripped from both ends of a report: separators and decoration
# machines and exports put around the text (MIMIC-IV-ECG's "***", "=-", ...).
_EDGE_CHARS = " \t\r\n*=-_~#|,;:"


# ------------------------------------------------------------------ reports
def normalize_report(text: Any) -> str:
    """A report as the model was trained on it; ``""`` means no usable report.

    Rules, in order: missing values (None, NaN) become ``""``; lower-case;
    every ``ekg`` becomes ``ecg`` (German/US spelling unified, also inside words
    such as ``ruhe-ekg``); runs of whitespace (incl. newlines) become one space;
    the characters `` *=-_~#|,;:`` are stripped from both ends (never inside).
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    t = str(text).lower().replace("ekg", "ecg")
    t = " ".join(t.split())
    return t.strip(_EDGE_CHARS)


@dataclass(frozen=True)
class Pair:
    """One ECG file and its report (already normalised)."""

    path: str
    report: str
    id: str


@dataclass
class PairSet:
    """The pairs of a run and what was dropped while building it."""

    pairs: list[Pair]
    n_empty: int  # rows whose report was empty after normalisation
    source: str  # e.g. "PTB-XL at DIR (500 Hz)"
    missing: list[str] = field(default_factory=list)  # rows whose ECG file does not exist

    @property
    def n_missing(self) -> int:
        return len(self.missing)


def _exists(path: str) -> bool:
    container = path.split("::", 1)[0]  # "file.hdf5::exam" names a record inside a container
    return os.path.exists(container)


def _finish(rows: Sequence[tuple[str, Any, str]], source: str, max_records: int | None) -> PairSet:
    pairs, empty, missing = [], 0, []
    for path, report, rid in rows:
        r = normalize_report(report)
        if not r:
            empty += 1
            continue
        if not _exists(str(path)):
            missing.append(str(path))
            continue
        pairs.append(Pair(path=str(path), report=r, id=str(rid)))
        if max_records is not None and len(pairs) >= max_records:
            break
    if not pairs:
        hint = f" ({len(missing)} ECG file(s) not found, e.g. {missing[0]})" if missing else ""
        raise DataError(f"{source}: no ECG-report pairs with a non-empty report and an existing file{hint}")
    return PairSet(pairs, empty, source, missing)


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # pandas raises many types for broken files
        raise DataError(f"{path}: cannot read the table ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from None


def _need_columns(df, cols: Sequence[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(map(str, list(df.columns)[:20]))})")


def read_manifest(path: str | Path, path_col: str = "path", report_col: str = "report",
                  id_col: str | None = None, max_records: int | None = None) -> PairSet:
    """A CSV/TSV/Parquet table of ECG paths and reports. Relative paths are taken
    relative to the manifest's folder."""
    p = Path(path)
    df = _read_table(p)
    _need_columns(df, [path_col, report_col] + ([id_col] if id_col else []), p)
    base = p.resolve().parent
    rows = []
    for i, (ecg_path, report) in enumerate(zip(df[path_col], df[report_col])):
        if not isinstance(ecg_path, str) or not ecg_path.strip():
            raise DataError(f"{p}: row {i + 2}: empty {path_col!r}")
        q = Path(ecg_path.strip()).expanduser()
        rid = str(df[id_col].iloc[i]) if id_col else str(i)
        rows.append((str(q if q.is_absolute() else base / q), report, rid))
    return _finish(rows, f"manifest {p}", max_records)


def read_ptbxl(root: str | Path, rate: int = 500, max_records: int | None = None) -> PairSet:
    """PTB-XL: ``ptbxl_database.csv`` (``report``, ``filename_hr`` / ``filename_lr``)
    under ``root``. ``rate`` 500 uses the 500-Hz records, 100 the 100-Hz ones."""
    r = Path(root)
    table = r / "ptbxl_database.csv"
    if not table.is_file():
        raise DataError(f"{r}: not a PTB-XL folder (no ptbxl_database.csv)")
    df = _read_table(table)
    col = "filename_hr" if rate == 500 else "filename_lr"
    _need_columns(df, ["ecg_id", "report", col], table)
    rows = [(str(r / f) + ".hea", rep, str(eid)) for eid, rep, f in zip(df["ecg_id"], df["report"], df[col])]
    return _finish(rows, f"PTB-XL at {r} ({rate} Hz)", max_records)


def read_mimic_iv_ecg(root: str | Path, max_records: int | None = None) -> PairSet:
    """MIMIC-IV-ECG: ``record_list.csv`` (subject_id, study_id, file_name, path) and
    ``machine_measurements.csv`` (study_id, report_0 ... report_17) under ``root``.

    A study's report is its non-empty ``report_*`` fields, stripped, joined by
    single spaces. The WFDB files list aVF before aVL: harmless, because the
    readers reorder leads by name.
    """
    r = Path(root)
    rec_path, mm_path = r / "record_list.csv", r / "machine_measurements.csv"
    for p in (rec_path, mm_path):
        if not p.is_file():
            raise DataError(f"{r}: not a MIMIC-IV-ECG folder (no {p.name})")
    rec = _read_table(rec_path)
    mm = _read_table(mm_path)
    _need_columns(rec, ["study_id", "path"], rec_path)
    _need_columns(mm, ["study_id"], mm_path)
    report_cols = sorted((c for c in mm.columns if re.fullmatch(r"report_\d+", str(c))),
                         key=lambda c: int(str(c).split("_")[1]))
    if not report_cols:
        raise DataError(f"{mm_path}: no report_0 ... report_17 columns")

    def join(row) -> str:
        parts = []
        for v in row:
            if isinstance(v, str) and v.strip():
                parts.append(v.strip())
        return " ".join(parts)

    reports = dict(zip(mm["study_id"].astype(str), (join(v) for v in mm[report_cols].itertuples(index=False))))
    rows = [(str(r / str(p)) + ".hea", reports.get(str(sid), ""), str(sid))
            for sid, p in zip(rec["study_id"], rec["path"])]
    return _finish(rows, f"MIMIC-IV-ECG at {r}", max_records)


def load_pairs(dataset: str, manifest: str | None = None, root: str | None = None, rate: int = 500,
               path_col: str = "path", report_col: str = "report", id_col: str | None = None,
               max_records: int | None = None) -> PairSet:
    """Dispatch on ``dataset`` (``manifest`` | ``ptbxl`` | ``mimic-iv-ecg``)."""
    if dataset == "manifest":
        if not manifest:
            raise DataError("no data: give a manifest of ECG-report pairs, or a dataset (ptbxl, mimic-iv-ecg) "
                            "with its root folder", field="manifest", option="manifest")
        return read_manifest(manifest, path_col, report_col, id_col, max_records)
    if not root:
        raise DataError(f"dataset {dataset} needs its root folder", field="root", option="root")
    if dataset == "ptbxl":
        return read_ptbxl(root, rate, max_records)
    if dataset == "mimic-iv-ecg":
        return read_mimic_iv_ecg(root, max_records)
    raise DataError(f"unknown dataset {dataset!r}")


# --------------------------------------------------------------- randomness
def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. seed, epoch, index): independent streams
    for each key tuple, the same on every machine."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def torch_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


# ------------------------------------------------------------------ sampler
class ShardedBatchSampler:
    """Deterministic, resumable, per-rank batches (like DistributedSampler + BatchSampler).

    Each epoch is a permutation of ``range(n)`` drawn from (seed, epoch); the
    first ``n_per_rank * world`` indices are dealt round-robin to the ranks, so
    every rank gets the same number of batches. A trailing partial batch is
    dropped, unless a rank has less than one batch (tiny data).
    Items are ``(index, draw_seed, epoch, batch)``; ``draw_seed`` keys that
    record's random crop and lead masking.
    """

    def __init__(self, n: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0):
        if n < world_size:
            raise DataError(f"{n} pairs cannot be shared by {world_size} processes")
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.per_rank = n // world_size

    def __len__(self) -> int:
        return max(1, self.per_rank // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> list[list[tuple[int, int, int, int]]]:
        """This rank's batches of ``epoch``, from batch ``start`` on."""
        perm = torch.randperm(self.n, generator=torch_generator(self.seed, 0x5A3D, epoch)).tolist()
        mine = perm[: self.per_rank * self.world][self.rank::self.world]
        size = min(self.batch_size, len(mine))
        batches = [mine[i * size:(i + 1) * size] for i in range(len(self))]
        return [[(i, derive_seed(self.seed, epoch, i), epoch, j) for i in batches[j]]
                for j in range(start, len(batches))]

    def run(self, epoch: int = 0, start: int = 0) -> Iterator[list[tuple[int, int, int, int]]]:
        """Batches from (``epoch``, batch ``start``) on, epoch after epoch, without end."""
        while True:
            yield from self.epoch(epoch, start)
            epoch, start = epoch + 1, 0


# ------------------------------------------------------------------ dataset
class PairDataset(torch.utils.data.Dataset):
    """ECG side of the pairs: one model-ready window per record and draw.

    ``__getitem__((index, draw_seed))`` reads the record (``ecgtext.io.read_ecg``),
    crops it to the model window (``crop="random"``: a random start when the record
    is longer than the window; ``"first"``: its beginning), runs the inference
    preprocessing (``ecgtext.preprocess.prepare`` with the model's config), and
    zeroes each lead with probability ``lead_masking``. Returns
    ``{"index", "ecg": (leads, window) float32 mV}`` or ``{"index", "error"}``.
    """

    def __init__(self, pairs: Sequence[Pair], preprocess, read_options: dict | None = None,
                 crop: str = "random", lead_masking: float = 0.5):
        from .. import io  # noqa: F401  (imported here, not in each worker)

        self.paths = [p.path for p in pairs]
        self.preprocess = preprocess
        self.read_options = dict(read_options or {})
        self.crop = crop
        self.lead_masking = float(lead_masking)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, draw_seed = key[0], key[1]
        where = {"index": index, "epoch": key[2] if len(key) > 2 else 0, "batch": key[3] if len(key) > 3 else 0}
        rng = np.random.default_rng(draw_seed)
        try:
            x = self.load(index, rng)
        except EcgTextError as exc:
            return {**where, "error": str(exc)}
        except Exception as exc:  # a reader bug or an odd file must not end a long run
            return {**where, "error": f"{self.paths[index]}: {type(exc).__name__}: {exc}"}
        if self.lead_masking > 0:
            # uniform draws for all leads first, so the stream does not depend on the outcome
            drop = rng.random(x.shape[0]) < self.lead_masking
            x[drop] = 0.0
        return {**where, "ecg": torch.from_numpy(x)}

    def load(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """(leads, window) float32 mV for record ``index``, before lead masking."""
        from ..io import ReadOptions, read_ecg
        from ..preprocess import prepare

        path = self.paths[index]
        ecg = read_ecg(path, ReadOptions(**self.read_options))
        pre = self.preprocess
        need = int(math.ceil(pre.window * ecg.fs / pre.sample_rate))  # window in source samples
        n = ecg.signal.shape[1]
        if self.crop == "random" and n > need:
            start = int(rng.integers(0, n - need + 1))
            ecg = replace(ecg, signal=ecg.signal[:, start:start + need])
        elif n > need:
            ecg = replace(ecg, signal=ecg.signal[:, :need])
        prepared = prepare(ecg, pre)
        if len(prepared.windows) == 0:
            raise DataError(f"{path}: no window after preprocessing")
        x = np.array(prepared.windows[0], dtype=np.float32, copy=True)
        if not np.isfinite(x).all():
            raise DataError(f"{path}: non-finite samples after preprocessing")
        return x


def collate_ecgs(items: list[dict]) -> dict[str, Any]:
    """Stack readable records: ``ecg`` (B, leads, window), ``index`` (B,),
    ``failed`` [(index, message)] for the ones that could not be read, and the
    batch's place in the data stream (``epoch``, ``batch``)."""
    ok = [it for it in items if "ecg" in it]
    failed = [(it["index"], it["error"]) for it in items if "error" in it]
    ecg = torch.stack([it["ecg"] for it in ok]) if ok else torch.empty(0)
    return {"ecg": ecg, "index": torch.tensor([it["index"] for it in ok], dtype=torch.long),
            "failed": failed, "epoch": items[0]["epoch"] if items else 0,
            "batch": items[0]["batch"] if items else 0}


def iterate_batches(dataset: PairDataset, batches: Iterable[list[tuple[int, int, int, int]]],
                    num_workers: int, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """Batches in order through one DataLoader (``num_workers`` processes, started once);
    ``batches`` may be endless (:meth:`ShardedBatchSampler.run`)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_ecgs,
        persistent_workers=False, prefetch_factor=2 if num_workers else None, pin_memory=pin_memory)
    return iter(loader)


# ---------------------------------------------------------------------- MLM
class MlmMasker:
    """Tokenise reports and corrupt them for masked language modelling.

    T5's tokenizer has no mask token, so the sentinel ``<extra_id_0>`` stands in
    (configurable). In each report, ``max(1, round(prob * n))`` of its ``n``
    ordinary tokens are chosen (EOS, padding and every special / sentinel token
    are never chosen); with ``strategy="bert"`` a chosen token becomes the mask
    token 80 % of the time, a random ordinary token 10 %, and stays 10 %;
    ``"mask"`` always masks. Labels are the original ids at chosen positions, -100
    elsewhere.
    """

    def __init__(self, tokenizer, max_length: int, prob: float = 0.25, strategy: str = "bert",
                 mask_token: str = "<extra_id_0>"):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prob = prob
        self.strategy = strategy
        mask_id = tokenizer.convert_tokens_to_ids(mask_token)
        if mask_id is None or mask_id == tokenizer.unk_token_id:
            raise DataError(f"the tokenizer has no token {mask_token!r} to use as the MLM mask "
                            "(set mlm_mask_token to one of its tokens)")
        self.mask_id = int(mask_id)
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids) | {self.mask_id}), dtype=torch.long)
        n_vocab = len(tokenizer)
        ordinary = torch.ones(n_vocab, dtype=torch.bool)
        ordinary[self.special[self.special < n_vocab]] = False
        self.ordinary_ids = torch.nonzero(ordinary).flatten()

    def __call__(self, texts: list[str], generator: torch.Generator):
        """Texts -> (input_ids (B, L), attention_mask (B, L), labels (B, L)) int64."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        ids, attn = enc["input_ids"].long(), enc["attention_mask"].long()
        maskable = attn.bool() & ~torch.isin(ids, self.special)
        n = maskable.sum(1)
        k = torch.where(n > 0, torch.clamp((n.float() * self.prob).round().long(), min=1), torch.zeros_like(n))
        scores = torch.rand(ids.shape, generator=generator)
        scores[~maskable] = 2.0  # never chosen before a maskable token
        rank = scores.argsort(1).argsort(1)
        chosen = (rank < k[:, None]) & maskable
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        out = ids.clone()
        if self.strategy == "mask":
            out[chosen] = self.mask_id
        else:
            u = torch.rand(ids.shape, generator=generator)
            rand_tok = self.ordinary_ids[torch.randint(len(self.ordinary_ids), ids.shape, generator=generator)]
            out = torch.where(chosen & (u < 0.8), torch.full_like(ids, self.mask_id), out)
            out = torch.where(chosen & (u >= 0.8) & (u < 0.9), rand_tok, out)
        return out, attn, labels
