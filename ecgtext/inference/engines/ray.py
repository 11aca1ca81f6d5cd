"""The Ray Data engine of ``ecgtext embed``: many CPUs read, GPU (or CPU) actors embed.

A streaming pipeline, from record list to Parquet dataset::

    inputs (files, folders, globs, Parquet/CSV manifests of paths)
      -> expand        Ray tasks: folders walked, manifests read, HDF5 exams listed
      -> blocks of ``records_per_part`` record keys (streaming repartition)
      -> prepare       Ray tasks (``read_parallelism``): read_ecg + prepare, exactly
                       the local engine's per-record code (RecordDataset); a long
                       recording (a Holter: ``should_stream``) is only marked here
                       and streamed by the model actor, a chunk of windows at a time
      -> embed         ``num_actors`` model actors (``num_gpus=1`` each on GPU clusters):
                       the local engine's model loop (features_from_prepared), rows
                       built by the local engine's row builder, one part file per batch
      -> OUT/part-<key digest>.parquet    + OUT-stem.errors.jsonl (driver)

Long recordings keep their bounded memory on Ray too: preparing a 24-h Holter whole in a
read task would take ~7-10 GB there and move ~2 GB of windows through the object store,
so the actor that embeds it opens it itself (the local engine's streaming path,
``StreamedRecord``) and its peak stays at one chunk of windows plus the features.

Nothing holds the full record list: the driver sees one small summary row per
part file, and the "done" set for resuming is a sorted array of 16-byte key
digests (16 bytes per record) shared through Ray's object store.

Exactly once. Records are keyed by :func:`~ecgtext.inference.embed.record_key`
(absolute path, ``::exam`` for HDF5; with per-window rows the key's windows are
written together). A part file is named after the digest of the keys it holds
and written atomically (temporary name + rename on local disks; a single object
PUT on object stores), so a retried task (Ray retries failed tasks and
restarts killed actors) rewrites the same file instead of adding one. At the
end the driver scans the output (Ray tasks read only the ``path`` column) and
removes any key found in two part files (overlapping inputs, or a retry that
regrouped records), then checks that every key is present once. Rerunning
into the same ``OUT`` skips the keys already there (resume); failed records
are listed in the errors sidecar and retried by the next run.

Test-only hook: with ``ECGTEXT_TEST_CRASH_AFTER_BATCHES=N[:FLAG]`` in the
driver's environment a model actor exits abruptly after writing its N-th part
(once per cluster when ``FLAG``, a file path, is given: the first actor to get
there creates it). Tests use it to kill a worker mid-run; never set it
otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ecgtext.errors import ConfigError, EcgTextError, InputError, ModelError
from ecgtext.inference.engines.parts import (
    _member,
    errors_location,
    key_digests,
    output_fs,
    remove_duplicates,
    scan_output,
    write_part,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from ecgtext.inference.embed import EmbedSummary
    from ecgtext.io import ReadOptions

logger = logging.getLogger(__name__)

TEST_CRASH_ENV = "ECGTEXT_TEST_CRASH_AFTER_BATCHES"
INSTALL_HINT = 'pip install "ecgtext[ray]"'
MANIFEST_COLUMN = "path"
READ_TASK_MEMORY = 256 << 20  # bytes reserved per read/prepare task, plus 1 MiB per record


@dataclass
class RayOptions:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # a running cluster (host:port, ray://host:port, auto); None: start a local one
    num_cpus: int | None = None  # CPUs of the local instance (None: all); ignored with an address
    read_parallelism: int | None = None  # concurrent read/prepare tasks (None: as many as CPUs allow)
    read_cpus: float = 1.0  # CPUs reserved per read/prepare task
    num_actors: int = 1  # model actors
    actor_cpus: float = 1.0  # CPUs per model actor (also its torch threads, at least 1)
    actor_gpus: float | None = None  # GPUs per actor; None: 1 when the cluster has GPUs, else 0
    records_per_part: int = 256  # records per read block, actor batch and part file
    connect_timeout_s: float = 10.0  # giving up on an unreachable cluster address


# --------------------------------------------------------------------------- connection
def import_ray():
    """``ray`` with Ray Data, or a one-line :class:`ConfigError` naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(f"the Ray engine needs Ray Data, which is not installed: {INSTALL_HINT}",
                          field="engine", value="ray") from None
    return ray


def _probe(address: str, timeout: float) -> None:
    """Fail fast (one line) when nothing listens at ``address``: ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"Ray address {address!r}: expected host:port, ray://host:port or auto",
                          field="ray address", value=address, option="ray_address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else (
            (exc.strerror or str(exc)).lower())
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({why} after at most {timeout:g} s)",
                          field="ray address", value=address, option="ray_address") from None


def connect(options: RayOptions) -> bool:
    """Join ``options.address`` or start a local instance; True when this call started Ray
    (the caller shuts it down). A Ray already initialised in this process is reused."""
    ray = import_ray()
    if options.address:
        _probe(options.address, options.connect_timeout_s)
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if options.address:
        try:
            ray.init(address=options.address, **quiet)
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; the user needs one line
            msg = " ".join(str(exc).split())[:200]
            raise ConfigError(f"cannot join the Ray cluster at {options.address} ({msg})",
                              field="ray address", value=options.address, option="ray_address") from None
        return True
    ray.init(num_cpus=options.num_cpus, include_dashboard=False, **quiet)
    return True


def _quiet_ray_data() -> None:
    """Our progress bar and summary line only (Ray's own bars and plan logs off)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------- pipeline stages
def _manifest_kind(path: str) -> str | None:
    """``parquet``/``csv`` for a manifest of record paths (a Parquet file, or a CSV whose header
    has a ``path`` column and names no ECG lead), else None."""
    low = path.lower()
    if low.endswith(".parquet"):
        return "parquet"
    if low.endswith((".csv", ".tsv")) and os.path.isfile(path):
        from ecgtext.io.paths import _csv_names_leads

        try:
            with open(path, encoding="utf-8", errors="ignore") as fh:
                head = [c.strip().strip('"') for c in fh.readline().replace("\t", ",").split(",")]
        except OSError:
            return None
        if MANIFEST_COLUMN in head and not _csv_names_leads(Path(path)):
            return "csv"
    return None


def _expand_row(row: dict[str, Any], read_options: "ReadOptions | None", base: str = "") -> list[dict]:
    """One input (file, folder, glob; relative to ``base``) -> one row per record key, or
    per failure. Runs in a Ray task, so a folder of millions is walked on a worker."""
    from ecgtext.inference.engine import ReadFailure, _failure, expand_records
    from ecgtext.io import expand_paths

    item = str(row["input"])
    if base and not os.path.isabs(item) and "://" not in item:
        item = os.path.join(base, item)
    try:
        paths = expand_paths([item])
        items = expand_records([os.path.abspath(p) for p in paths], read_options)
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
        items = [_failure(item, exc)]
    return [{"path": it, "error": "", "message": ""} if isinstance(it, str)
            else {"path": it.path, "error": it.kind, "message": it.problem}
            for it in items if isinstance(it, (str, ReadFailure))]


def _prepare_batch(batch: dict[str, np.ndarray], *, pre, read_options, stride, min_coverage,
                   done) -> dict[str, np.ndarray]:
    """Read + prepare one block of records (the local engine's RecordDataset item code).
    Keys already in the output are marked ``skip`` and not read."""
    import ray

    from ecgtext.inference.engine import ReadFailure, RecordDataset
    from ecgtext.inference.streaming import StreamedRecord

    done_arr = ray.get(done) if isinstance(done, ray.ObjectRef) else done
    paths = [str(p) for p in batch["path"]]
    n = len(paths)
    error = [str(e) for e in batch["error"]]
    message = [str(m) for m in batch["message"]]
    skip = _member(key_digests(paths), done_arr) & np.array([not e for e in error], dtype=bool)
    ds = RecordDataset(paths, pre, read_options, stride=stride, min_coverage=min_coverage, stream_long=True)
    empty = np.zeros((0, len(pre.leads), int(pre.window)), dtype=np.float32)
    windows = np.empty(n, dtype=object)
    info = []
    for i in range(n):
        windows[i] = empty
        if error[i] or skip[i]:
            info.append("{}")
            continue
        item = ds[i]
        if isinstance(item, ReadFailure):
            error[i], message[i] = item.kind, item.problem
            info.append("{}")
            continue
        if isinstance(item, StreamedRecord):  # long: the model actor streams it (bounded memory)
            info.append(json.dumps({"stream": True}))
            continue
        windows[i] = item.windows
        info.append(json.dumps({"starts_s": [float(x) for x in item.starts_s], "source_fs": item.source_fs,
                                "duration_s": item.duration_s, "missing_leads": item.missing_leads,
                                "flat_leads": item.flat_leads, "nan_fraction": item.nan_fraction}))
    return {"path": np.array(paths, dtype=object), "error": np.array(error, dtype=object),
            "message": np.array(message, dtype=object), "skip": skip, "windows": windows,
            "info": np.array(info, dtype=object)}


class _Embedder:
    """A model actor: the local engine's inference loop and row builder; writes one part per batch."""

    def __init__(self, *, model_ref: str, provenance: dict, meta: dict, device: str, precision: str,
                 batch_size: int, per_window: bool, aggregate: str, fs, root: str, local: bool,
                 threads: int, crash: str | None, read_options: "ReadOptions | None" = None,
                 stride: int | None = None, min_coverage: float = 0.5):
        import torch

        from ecgtext.inference.embed import _schema
        from ecgtext.inference.engine import load_ecg_model, resolve_device
        from ecgtext.inference.provenance import Provenance, provenance_for

        torch.set_num_threads(max(1, threads))
        self.dev = resolve_device(device)
        self.net = load_ecg_model(model_ref, device=self.dev)
        expected = Provenance.from_dict(provenance, "this run")
        pre = expected.preprocess
        here = provenance_for(self.net, device=self.dev, precision=precision, source=model_ref,
                              stride=pre.get("stride"), min_coverage=pre.get("min_coverage"))
        if here.weights_sha256 != expected.weights_sha256:
            raise ModelError(f"{model_ref}: the model on this Ray worker has other weights "
                             f"({here.weights_sha256[:12]}) than the driver's ({expected.weights_sha256[:12]})")
        expected.check_same(here, f"Ray worker on {socket.gethostname()}")
        self.schema = _schema(self.net.embed_dim, meta)
        self.model_id = meta["model"]
        self.precision, self.batch_size = precision, batch_size
        self.per_window, self.aggregate = per_window, aggregate
        self.fs, self.root, self.local = fs, root, local
        self.crash = crash
        self.calls = 0
        # for the long recordings this actor streams itself
        self.pre, self.read_options = self.net.config.preprocess, read_options
        self.stride, self.min_coverage = stride, min_coverage

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ecgtext.inference.embed import _Rows, add_record, error_entry
        from ecgtext.inference.engine import PreparedRecord, ReadFailure, features_from_prepared
        from ecgtext.inference.streaming import StreamedRecord

        items: list = []
        skipped = 0
        for i, path in enumerate(batch["path"]):
            path = str(path)
            if batch["skip"][i]:
                skipped += 1
            elif batch["error"][i]:
                items.append(ReadFailure(path, str(batch["error"][i]), str(batch["message"][i])))
            elif (m := json.loads(batch["info"][i])).get("stream"):
                items.append(StreamedRecord(path, self.pre, self.read_options, self.stride, self.min_coverage))
            else:
                items.append(PreparedRecord(
                    path=path, windows=np.asarray(batch["windows"][i], dtype=np.float32),
                    starts_s=np.asarray(m["starts_s"], dtype=np.float64), source_fs=m["source_fs"],
                    duration_s=m["duration_s"], missing_leads=m["missing_leads"], flat_leads=m["flat_leads"],
                    nan_fraction=m["nan_fraction"]))
        rows = _Rows(self.net.embed_dim)
        errors, written, n_rows = [], 0, 0
        for r in features_from_prepared(items, self.net, batch_size=self.batch_size, device=self.dev,
                                        precision=self.precision):
            if isinstance(r, EcgTextError):
                errors.append(error_entry(r))
                continue
            n_rows += add_record(rows, r, per_window=self.per_window, aggregate=self.aggregate,
                                 model_id=self.model_id)
            written += 1
        part = write_part(self.fs, self.root, self.local, rows.table(self.schema)) if len(rows) else ""
        self.calls += 1
        self._maybe_crash()
        return {"part": np.array([part], dtype=object), "written": np.array([written]),
                "rows": np.array([n_rows]), "skipped": np.array([skipped]),
                "errors": np.array([json.dumps(errors)], dtype=object)}

    def _maybe_crash(self) -> None:
        """The test-only hook of the module docstring: die after writing, before answering."""
        if not self.crash:
            return
        n, _, flag = self.crash.partition(":")
        if self.calls != int(n):
            return
        if flag:
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os._exit(17)


# --------------------------------------------------------------------------- run
def _unwrap(exc: BaseException) -> EcgTextError | None:
    """Our error inside a Ray task/actor error, if that is what failed."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, EcgTextError):
            return cur
        cause = getattr(cur, "cause", None)
        cur = cause if isinstance(cause, BaseException) else cur.__cause__
        seen += 1
    return None


def run_embed_ray(inputs: Sequence[str], model: str | os.PathLike, out: str | os.PathLike,
                  read_options: "ReadOptions | None" = None, *, options: RayOptions | None = None,
                  per_window: bool = False, aggregate: str = "mean", batch_size: int = 32,
                  precision: str = "auto", stride: int | None = None, min_coverage: float = 0.5,
                  overwrite: bool = False,
                  on_record: Callable[[str, InputError | None], None] | None = None,
                  on_start: Callable[[int | None, int], None] | None = None) -> "EmbedSummary":
    """Embed ``inputs`` on Ray into the Parquet dataset ``out`` (folder or URI); see the module
    docstring. Same rows, schema and metadata as :func:`~ecgtext.inference.embed.run_embed`
    (paths are written absolute). ``on_start(None, 0)`` is called once (the total is not
    known up front: inputs are expanded on the workers); ``on_record(path, error_or_None)``
    per record (``path`` is empty for successes, which are reported per part)."""
    import torch

    from ecgtext.inference.embed import EmbedSummary, embed_meta
    from ecgtext.inference.engine import AGGREGATES, ReadFailure, load_ecg_model
    from ecgtext.inference.provenance import provenance_for

    opts = options or RayOptions()
    if aggregate not in AGGREGATES:
        raise ConfigError(f"unknown aggregation {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
    if opts.records_per_part < 1 or opts.num_actors < 1:
        raise ConfigError("records per part and the number of model actors must be at least 1")
    ray = import_ray()
    fs, root, local = output_fs(out)
    import pyarrow.fs as pafs

    kind = fs.get_file_info(root).type
    if kind == pafs.FileType.File:
        raise ConfigError(f"{out} is a file; the Ray engine writes a folder of part files (choose another "
                          "output, or merge part files into one file with the merge command)", path=str(out))
    started = connect(opts)
    try:
        _quiet_ray_data()
        gpus = opts.actor_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        device = "cuda" if gpus > 0 else "cpu"
        cpus = ray.cluster_resources().get("CPU", 0)
        need = opts.num_actors * opts.actor_cpus + opts.read_cpus
        if opts.address is None and need > cpus:  # a fixed local instance would wait for ever
            raise ConfigError(f"{opts.num_actors} model actor(s) x {opts.actor_cpus:g} CPU plus one read task "
                              f"need {need:g} CPUs; the local Ray instance has {cpus:g} (use fewer actors, "
                              "fewer CPUs per actor, or more Ray CPUs)", field="actors", value=opts.num_actors,
                              option="actor_cpus")
        if device == "cuda" and precision == "auto" and not torch.cuda.is_available():
            precision = "bf16"  # the driver cannot ask the GPU; the actors check it (provenance)
        net = load_ecg_model(model, device="cpu")
        local_model = isinstance(model, os.PathLike) or Path(str(model)).is_dir()
        model_ref = str(net.model_dir) if (opts.address is None or local_model) else str(model)
        prov = provenance_for(net, device=torch.device(device) if device == "cpu" else "cuda",
                              precision=precision, source=model, stride=stride, min_coverage=min_coverage)
        meta = embed_meta(net, prov, per_window=per_window, aggregate=aggregate, stride=stride)
        pre = net.config.preprocess

        if overwrite and kind == pafs.FileType.Directory:
            fs.delete_dir(root)
        fs.create_dir(root, recursive=True)
        errors_path = errors_location(root)
        index = scan_output(import_ray(), fs, root, meta)
        remove_duplicates(fs, root, local, index)  # left by an earlier run; not this run's doing
        done_ref = ray.put(index.done())
        if on_start is not None:
            on_start(None, 0)

        ds = _source(ray, inputs, read_options, opts)
        ds = ds.repartition(target_num_rows_per_block=opts.records_per_part, strict=True)
        # retries are Ray Data's defaults: tasks are retried, dead actors restarted and their
        # batches retried, without limit (a part file is written under a name fixed by its keys)
        # the memory a block of prepared windows takes (~240 kB per 12-lead 10 s window) also keeps
        # Ray Data from fusing reading into the model actors: reading stays in its own CPU tasks
        ds = ds.map_batches(_prepare_batch, batch_size=None, batch_format="numpy", num_cpus=opts.read_cpus,
                            memory=READ_TASK_MEMORY + opts.records_per_part * (1 << 20),
                            compute=ray.data.TaskPoolStrategy(size=opts.read_parallelism),
                            fn_kwargs={"pre": pre, "read_options": read_options, "stride": stride,
                                       "min_coverage": min_coverage, "done": done_ref})
        ds = ds.map_batches(
            _Embedder, batch_size=opts.records_per_part, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=opts.num_actors), num_cpus=opts.actor_cpus, num_gpus=gpus,
            fn_constructor_kwargs={"model_ref": model_ref, "provenance": prov.to_dict(), "meta": meta,
                                   "device": device, "precision": precision, "batch_size": batch_size,
                                   "per_window": per_window, "aggregate": aggregate, "fs": fs, "root": root,
                                   "local": local, "threads": int(opts.actor_cpus),
                                   "crash": os.environ.get(TEST_CRASH_ENV), "read_options": read_options,
                                   "stride": stride, "min_coverage": min_coverage})

        written = n_rows = skipped = failed = 0
        err_fh = None
        if fs.get_file_info(errors_path).type == pafs.FileType.File:
            fs.delete_file(errors_path)  # earlier failures are retried by this run
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for i in range(len(batch["part"])):
                    written += int(batch["written"][i])
                    n_rows += int(batch["rows"][i])
                    skipped += int(batch["skipped"][i])
                    for e in json.loads(batch["errors"][i]):
                        failed += 1
                        if err_fh is None:
                            err_fh = fs.open_output_stream(errors_path)
                        err_fh.write((json.dumps(e) + "\n").encode())
                        if on_record is not None:
                            on_record(e["path"] or "", ReadFailure(e["path"], e["error"], e["message"]).to_error())
                    if on_record is not None:
                        for _ in range(int(batch["written"][i])):
                            on_record("", None)
        except Exception as exc:
            ours = _unwrap(exc)
            if ours is not None:
                raise ours from None
            raise
        finally:
            if err_fh is not None:
                err_fh.close()

        # commit: one copy of every key, then an empty dataset still carries schema + provenance
        index = scan_output(import_ray(), fs, root, meta)
        dup_records, dup_rows = remove_duplicates(fs, root, local, index)
        written -= dup_records
        n_rows -= dup_rows
        if not index.files:
            write_part(fs, root, local, meta_table(net.embed_dim, meta))
        return EmbedSummary(output=Path(root) if local else Path(str(out)), written=written, rows=n_rows,
                            failed=failed, skipped=skipped,
                            errors_path=(Path(errors_path) if local else Path(errors_path)) if failed else None)
    finally:
        if started:
            ray.shutdown()


def meta_table(dim: int, meta: dict) -> "pa.Table":
    """An empty table with the output schema (for a run that embedded nothing)."""
    from ecgtext.inference.embed import _schema

    return _schema(dim, meta).empty_table()


def _source(ray, inputs: Sequence[str], read_options: "ReadOptions | None", opts: RayOptions):
    """The record-key dataset: plain inputs and manifests, expanded in Ray tasks."""
    plain, manifests = [], []
    for item in inputs:
        item = os.fspath(item)
        kind = _manifest_kind(item) if "://" not in item else (
            "parquet" if item.lower().endswith(".parquet") else None)
        if kind:
            manifests.append((item, kind))
        else:
            plain.append(item if "://" in item or os.path.isabs(item) else os.path.abspath(item))
    parts = []
    if plain:
        src = ray.data.from_items([{"input": p} for p in plain], override_num_blocks=max(1, min(len(plain), 256)))
        parts.append(src.flat_map(_expand_row, fn_kwargs={"read_options": read_options}))
    for m, kind in manifests:
        reader = ray.data.read_parquet if kind == "parquet" else ray.data.read_csv
        try:
            mds = reader(m if "://" in m else os.path.abspath(m))
        except Exception as exc:  # noqa: BLE001 - unreadable manifest: one line
            msg = " ".join(str(exc).split())[:200]
            raise InputError(m, f"cannot read the manifest of record paths ({msg})") from None
        base = posixpath.dirname(m) if "://" in m else os.path.dirname(os.path.abspath(m))
        mds = mds.select_columns([MANIFEST_COLUMN]).rename_columns({MANIFEST_COLUMN: "input"})
        parts.append(mds.flat_map(_expand_row, fn_kwargs={"read_options": read_options, "base": base}))
    if not parts:
        raise InputError(None, "no ECG records found in the given paths")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
