"""Write ECG embeddings to Parquet: streaming, resumable, shardable.

Layout (``OUT`` = e.g. ``emb.parquet``):

- unsharded: the result is the single file ``OUT``. While running, finished
  rows go to small part files in ``OUT.parts/`` (each written atomically), so
  a killed run loses at most the rows not yet flushed (``flush_every`` records
  or ``flush_seconds``). At the end ``OUT`` (if it exists) and the parts are
  merged into a new ``OUT`` (atomic rename) and ``OUT.parts/`` is removed.
- sharded (``shard=(i, n)``): ``OUT`` is a directory, a Parquet dataset; shard
  *i* writes ``OUT/part-0000i-of-0000n.parquet`` and works in the hidden
  ``OUT/_work-0000i-of-0000n/``, which dataset readers skip. Shard *i*
  processes the *i*-th contiguous slice of the sorted input paths.

Re-running the same command skips records already in ``OUT`` or in its part
files (matched by absolute path), so an interrupted run resumes and a finished
one only adds new records. Records that fail are listed in
``OUT-stem.errors.jsonl`` (one JSON object per line: path, error, message) and
are retried by the next run; so is a record whose embedding has a non-finite
value (never written).

The schema metadata (key ``ecgtext``) holds the run's settings and its
:class:`~ecgtext.inference.provenance.Provenance` block (weights, resolved
precision, device type, preprocessing contract, ecgtext version); resuming or
appending with any of them different is refused.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ecgtext import __version__
from ecgtext.errors import ConfigError, InputError, ProvenanceError
from ecgtext.fsutil import atomic_path, remove_tree
from ecgtext.inference.provenance import Provenance, provenance_for

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from ecgtext.inference.engine import EngineOptions
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta

META_KEY = b"ecgtext"
logger = logging.getLogger(__name__)
FINAL_ROW_GROUP = 8192  # rows per row group of the merged file (~25 MB at D = 768)


@dataclass
class EmbedSummary:
    """What one ``run_embed`` call did."""

    output: Path  # the final file (this shard's file when sharded)
    written: int  # records embedded by this run
    rows: int  # rows written by this run (records, or windows with per_window)
    failed: int
    skipped: int  # records already present from an earlier run
    errors_path: Path | None  # the errors file, when something failed


# --------------------------------------------------------------------------- layout
def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n) with 0 <= i < n; ``None`` -> torchrun's RANK/WORLD_SIZE if > 1."""
    if spec is None:
        world = os.environ.get("WORLD_SIZE")
        if world and world.isdigit() and int(world) > 1:
            return int(os.environ.get("RANK", "0")), int(world)
        return None
    i, sep, n = str(spec).partition("/")
    try:
        i_, n_ = int(i), int(n)
    except ValueError:
        raise ConfigError(f"shard {spec!r}: expected i/n, e.g. 0/4", field="shard", value=spec,
                          option="shard") from None
    if not sep or n_ < 1 or not 0 <= i_ < n_:
        raise ConfigError(f"shard {spec!r}: expected i/n with 0 <= i < n", field="shard", value=spec,
                          option="shard")
    return i_, n_


def shard_slice(paths: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """The shard's contiguous slice of the sorted ``paths`` (all of them, in order, if unsharded)."""
    if shard is None:
        return list(paths)
    i, n = shard
    s = sorted(paths)
    return s[len(s) * i // n: len(s) * (i + 1) // n]


def _stem(out: Path) -> str:
    return out.name[: -len(".parquet")] if out.name.endswith(".parquet") else out.name


def output_layout(out: str | os.PathLike, shard: tuple[int, int] | None) -> tuple[Path, Path, Path]:
    """(final file, work dir for part files, errors file) of an output and shard."""
    out = Path(out)
    if shard is None:
        return out, out.with_name(out.name + ".parts"), out.with_name(_stem(out) + ".errors.jsonl")
    i, n = shard
    tag = f"{i:05d}-of-{n:05d}"
    return (out / f"part-{tag}.parquet", out / f"_work-{tag}",
            out.with_name(f"{_stem(out)}.errors-{tag}.jsonl"))


def record_key(path: str) -> str:
    """Path identity for resuming: absolute container path (+ ``::exam``)."""
    from ecgtext.io.paths import KEY_SEP, split_key

    container, key = split_key(path)
    base = os.path.normcase(os.path.abspath(container))
    return base if key is None else f"{base}{KEY_SEP}{key}"


# --------------------------------------------------------------------------- tables
def _schema(dim: int, meta: dict) -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()),  # display_path: valid UTF-8, one line
        ("path_bytes", pa.binary()),  # os.fsencode(path): lossless, what resuming matches on
        ("window", pa.int32()),
        ("start_s", pa.float64()),
        ("n_windows", pa.int32()),
        ("fs", pa.float64()),
        ("duration_s", pa.float64()),
        ("missing_leads", pa.list_(pa.string())),
        ("model", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ], metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()})


class _Rows:
    """Column buffers of rows not yet flushed."""

    def __init__(self, dim: int):
        self.dim = dim
        self.clear()

    def clear(self):
        self.cols = {k: [] for k in ("path", "path_bytes", "window", "start_s", "n_windows", "fs",
                                     "duration_s", "missing_leads", "model")}
        self.emb: list[np.ndarray] = []
        self.records = 0

    def add(self, path, window, start_s, n_windows, fs, duration_s, missing, model, emb):
        from ecgtext.errors import display_path

        values = (display_path(path), os.fsencode(path), window, start_s, n_windows, fs, duration_s,
                  missing, model)
        for k, v in zip(self.cols, values):
            self.cols[k].append(v)
        self.emb.append(np.asarray(emb, dtype=np.float32).reshape(self.dim))

    def __len__(self):
        return len(self.emb)

    def table(self, schema: "pa.Schema") -> "pa.Table":
        import pyarrow as pa

        flat = np.concatenate(self.emb) if self.emb else np.zeros(0, np.float32)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), self.dim)
        arrays = [pa.array(self.cols[f.name], type=f.type) for f in schema if f.name != "embedding"]
        return pa.Table.from_arrays(arrays + [emb], schema=schema)


def _read_meta(path: Path) -> dict | None:
    import pyarrow.parquet as pq

    md = pq.read_schema(path).metadata or {}
    if META_KEY not in md:
        return None
    try:
        meta = json.loads(md[META_KEY])
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict):
        raise ProvenanceError(f"{path}: the ecgtext metadata block cannot be read", path=str(path),
                              field="provenance", option="overwrite")
    return meta


def _compatible(old: dict | None, new: dict, where: Path) -> None:
    """Refuse to append rows that are not comparable with those already written: first
    their provenance (weights, precision, device, preprocessing, version), then the
    embedding settings (rows per record or window, aggregation)."""
    if old is None:
        raise ConfigError(f"{where}: not an ecgtext embedding file; choose another output",
                          path=str(where), option="overwrite")
    if "provenance" not in old:
        raise ProvenanceError(f"{where}: no provenance block (written by an older ecgtext), so the rows "
                              "cannot be checked against this run; choose another output",
                              path=str(where), field="provenance", option="overwrite")
    recorded = Provenance.from_dict(old["provenance"], str(where))
    recorded.check_same(Provenance.from_dict(new["provenance"], "this run"), str(where), option="overwrite",
                        advice="; choose another output")
    keys = ("model_sha256", "per_window", "aggregate", "embed_dim", "preprocess", "stride")
    diff = [k for k in keys if old.get(k) != new.get(k)]
    if diff:
        what = ", ".join(f"{k} {old.get(k)!r} vs {new.get(k)!r}" for k in diff)
        raise ConfigError(f"{where} was written with different settings ({what}); choose another output",
                          path=str(where), field=diff[0], value=(old.get(diff[0]), new.get(diff[0])),
                          option="overwrite")


def embed_meta(net: "DBeta", prov: Provenance, *, per_window: bool, aggregate: str,
               stride: int | None) -> dict:
    """The schema metadata of an embed output (settings + provenance); every engine writes it."""
    from ecgtext.inference.engine import model_identity

    ident = model_identity(net.model_dir)
    pre = net.config.preprocess
    return {"ecgtext_version": __version__, "model": ident.short(), "model_name": ident.name,
            "model_sha256": ident.weights_sha256, "embed_dim": net.embed_dim, "per_window": per_window,
            "aggregate": None if per_window else aggregate, "stride": stride,
            "feature": "unimodal ECG feature (class token -> multi_modal_ecg_proj -> unimodal_ecg_pooler)",
            "preprocess": {"sample_rate": pre.sample_rate, "window": pre.window, "leads": list(pre.leads),
                           "units": pre.units, "filter": pre.filter, "normalize": pre.normalize},
            "provenance": prov.to_dict()}


def add_record(rows: _Rows, r, *, per_window: bool, aggregate: str, model_id: str) -> int:
    """Append one record's :class:`~ecgtext.inference.engine.RecordFeatures` as rows (one, or
    one per window); returns the number of rows added. Every engine builds rows with this."""
    common = (r.n_windows, r.source_fs, r.duration_s, list(r.missing_leads), model_id)
    if per_window:
        for w in range(r.n_windows):
            rows.add(r.path, w, float(r.starts_s[w]), *common, r.features[w])
    else:
        rows.add(r.path, None, None, *common, r.aggregate(aggregate))
    rows.records += 1
    return r.n_windows if per_window else 1


def error_entry(err: BaseException) -> dict:
    """One line of the errors sidecar (``path``, ``error`` class name, ``message``)."""
    from ecgtext.errors import display_path

    path = getattr(err, "path", None)
    entry = {"path": None if path is None else display_path(path), "error": type(err).__name__,
             "message": getattr(err, "problem", str(err))}
    if path is not None and entry["path"] != path:  # not UTF-8, or a newline in the name
        entry["path_bytes_hex"] = os.fsencode(path).hex()
    return entry


def _stored_paths(table: "pa.Table") -> list[str]:
    """The record paths of a table, losslessly (from ``path_bytes`` when the table has it)."""
    if "path_bytes" in table.schema.names:
        return [os.fsdecode(b) for b in table.column("path_bytes").to_pylist()]
    return table.column("path").to_pylist()


# --------------------------------------------------------------------------- run
def _done_keys(final: Path, work: Path, meta: dict) -> tuple[set[str], list[Path]]:
    """Keys already embedded (final file + complete part files) and the part files."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    if final.exists():
        try:
            old_meta = _read_meta(final)
            keys = _stored_paths(pq.read_table(final))
        except ProvenanceError:
            raise
        except Exception:  # noqa: BLE001 - not Parquet, or not ours
            raise ConfigError(f"{final}: exists and is not an ecgtext Parquet file; choose another output",
                              path=str(final), option="overwrite") from None
        _compatible(old_meta, meta, final)
        done.update(record_key(p) for p in keys)
    parts: list[Path] = []
    if work.is_dir():
        for junk in work.glob(".*"):  # temp files of a write that was killed
            junk.unlink(missing_ok=True)
        for part in sorted(work.glob("part-*.parquet")):
            try:
                _compatible(_read_meta(part), meta, part)
                keys = _stored_paths(pq.read_table(part))
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - cannot happen with atomic writes; redo its records
                logger.warning("%s: unreadable part file removed; its records are embedded again", part)
                part.unlink(missing_ok=True)
                continue
            done.update(record_key(p) for p in keys)
            parts.append(part)
    return done, parts


def _merge(final: Path, parts: list[Path], schema: "pa.Schema") -> int:
    """Write ``final`` = old ``final`` + ``parts`` (a key appears once), atomically; rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sources = ([final] if final.exists() else []) + parts
    seen: set[str] = set()
    rows = 0
    with atomic_path(final) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            buf: list[pa.Table] = []
            n_buf = 0
            for src in sources:
                t = pq.read_table(src)
                if "path_bytes" not in t.schema.names:  # written before the column existed
                    t = t.add_column(1, "path_bytes", pa.array([os.fsencode(p) for p in
                                                                t.column("path").to_pylist()], pa.binary()))
                t = t.cast(schema)
                keys = [record_key(p) for p in _stored_paths(t)]
                if seen:  # a crash between renaming final and removing parts leaves duplicates
                    t = t.filter(pc.invert(pa.array([k in seen for k in keys])))
                seen.update(keys)
                buf.append(t)
                n_buf += t.num_rows
                if n_buf >= FINAL_ROW_GROUP:
                    writer.write_table(pa.concat_tables(buf), row_group_size=FINAL_ROW_GROUP)
                    rows += n_buf
                    buf, n_buf = [], 0
            if buf or rows == 0:
                writer.write_table(pa.concat_tables(buf) if buf else schema.empty_table(),
                                   row_group_size=FINAL_ROW_GROUP)
                rows += n_buf
    return rows


def run_embed(paths: Sequence[str], model: "DBeta | str | os.PathLike", out: str | os.PathLike,
              read_options: "ReadOptions | None" = None, *, per_window: bool = False, aggregate: str = "mean",
              shard: tuple[int, int] | None = None, overwrite: bool = False, flush_every: int = 256,
              flush_seconds: float = 60.0, on_record: Callable[[str, InputError | None], None] | None = None,
              on_start: Callable[[int, int], None] | None = None, engine: "EngineOptions | None" = None,
              **options) -> EmbedSummary:
    """Embed ``paths`` into Parquet at ``out`` (see the module docstring for the layout).

    One row per record (``aggregate`` over its windows) or, with ``per_window``,
    per window; columns ``path, path_bytes, window, start_s, n_windows, fs, duration_s,
    missing_leads, model, embedding`` (fixed_size_list<float32>[D]). ``path`` is
    UTF-8 text for reading (undecodable bytes as ``\\xNN``, control characters
    escaped: :func:`ecgtext.errors.display_path`); ``path_bytes`` the file name's
    exact bytes (``os.fsencode``), which resuming matches on.
    ``on_start(todo, skipped)`` and ``on_record(path, error_or_None)`` report progress.
    """
    from ecgtext.inference.engine import EngineOptions

    o = EngineOptions.merge(engine, options, "run_embed")
    batch_size, num_workers, device, precision = o.batch_size, o.num_workers, o.device, o.precision
    stride, min_coverage = o.stride, o.min_coverage
    from ecgtext.inference.engine import (
        AGGREGATES,
        ReadFailure,
        expand_records,
        iter_features,
        load_ecg_model,
        model_identity,
        resolve_device,
    )

    if aggregate not in AGGREGATES:
        raise ConfigError(f"unknown aggregation {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
    if flush_every < 1:
        raise ConfigError(f"flush_every must be at least 1, got {flush_every}")
    out = Path(out)
    if shard is None and out.is_dir():
        raise ConfigError(f"{out} is a directory (a sharded output?); give the same shard, or another output",
                          path=str(out), option="shard")
    if shard is not None:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} is a file; a sharded run writes a directory of part files",
                              path=str(out))
        others = {p.name.rsplit("-of-", 1)[-1] for p in out.glob("part-*-of-*.parquet")} if out.is_dir() else set()
        if others - {f"{shard[1]:05d}.parquet"}:
            raise ConfigError(f"{out} holds shards of a run split another way; use the same shard "
                              "count or another output directory")
    final, work, errors_path = output_layout(out, shard)
    if overwrite:
        final.unlink(missing_ok=True)
        remove_tree(work)

    dev = resolve_device(device)
    net = model if not isinstance(model, (str, os.PathLike)) else load_ecg_model(model, device=dev)
    prov = provenance_for(net, device=dev, precision=precision,
                          source=model if isinstance(model, (str, os.PathLike)) else None,
                          stride=stride, min_coverage=min_coverage)
    logger.info("embedding with %s on %s, precision %s", prov.model_id, dev, prov.precision)
    ident = model_identity(net.model_dir)
    meta = embed_meta(net, prov, per_window=per_window, aggregate=aggregate, stride=stride)
    schema = _schema(net.embed_dim, meta)

    done, parts = _done_keys(final, work, meta)
    items = expand_records(shard_slice(paths, shard), read_options)
    todo = [it for it in items if isinstance(it, ReadFailure) or record_key(it) not in done]
    skipped = len(items) - len(todo)
    if on_start is not None:
        on_start(len(todo), skipped)

    work.mkdir(parents=True, exist_ok=True)
    next_part = 1 + max([int(p.stem.split("-")[1]) for p in parts] or [0])
    rows = _Rows(net.embed_dim)
    written = n_rows = failed = 0
    last_flush = time.monotonic()

    def flush():
        nonlocal next_part, last_flush
        if len(rows):
            import pyarrow.parquet as pq

            part = work / f"part-{next_part:06d}.parquet"
            with atomic_path(part) as tmp:
                pq.write_table(rows.table(schema), tmp)
            parts.append(part)
            next_part += 1
            rows.clear()
        last_flush = time.monotonic()

    errors_path.unlink(missing_ok=True)  # earlier failures are retried below
    err_fh = None
    try:
        from ecgtext.errors import EcgTextError

        early = [it.to_error() for it in todo if isinstance(it, ReadFailure)]
        keys = [it for it in todo if isinstance(it, str)]
        stream = iter_features(keys, net, read_options, batch_size=batch_size, num_workers=num_workers,
                               device=dev, precision=precision, stride=stride, min_coverage=min_coverage)
        for r in itertools.chain(early, stream):  # streamed: rows flush while the model runs
            if not isinstance(r, EcgTextError) and not np.isfinite(r.features).all():
                # never written: a NaN row would poison every mean, search and probe downstream
                r = InputError(r.path, "the model gave non-finite features (NaN or infinity) for this "
                               "record; nothing written", field="embedding")
            if isinstance(r, EcgTextError):
                failed += 1
                if err_fh is None:
                    err_fh = open(errors_path, "a", encoding="utf-8")
                err_fh.write(json.dumps(error_entry(r)) + "\n")
                err_fh.flush()
                if on_record is not None:
                    on_record(getattr(r, "path", "") or "", r)
                continue
            n_rows += add_record(rows, r, per_window=per_window, aggregate=aggregate, model_id=ident.short())
            written += 1
            if on_record is not None:
                on_record(r.path, None)
            if rows.records >= flush_every or time.monotonic() - last_flush >= flush_seconds:
                flush()
        flush()
    except BaseException:
        flush()  # Ctrl-C or a crash: keep what is done, the next run resumes from it
        raise
    finally:
        if err_fh is not None:
            err_fh.close()
    if parts or not final.exists():
        _merge(final, parts, schema)
    remove_tree(work)
    return EmbedSummary(output=final, written=written, rows=n_rows, failed=failed, skipped=skipped,
                        errors_path=errors_path if failed else None)
