"""The one inference path: file -> Ecg -> windows -> model batches -> ECG features.

``embed``, ``zeroshot`` and ``probe`` all call :func:`iter_features` (streaming)
or :func:`embed_paths` (all at once). Reading and preprocessing run in a torch
``DataLoader`` (optionally in worker processes); each item is one record, and a
record that cannot be read travels back as data (:class:`ReadFailure`), so one
bad file never stops the loader. The main process packs the variable number of
windows per record into fixed-size model batches and hands results back in
input order.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch

from ecgtext import errors as E
from ecgtext.config import PreprocessConfig
from ecgtext.errors import InputError
from ecgtext.inference.streaming import StreamedRecord
from ecgtext.model.precision import ecg_feature_fn, resolve_precision  # PRECISIONS re-exported

if TYPE_CHECKING:  # pragma: no cover
    from ecgtext.io import ReadOptions
    from ecgtext.model.dbeta import DBeta

logger = logging.getLogger(__name__)

AGGREGATES = ("mean", "max", "first")


@dataclass
class EngineOptions:
    """How the engine runs, shared by every command that computes ECG features.

    ``batch_size``: windows per model batch; ``num_workers``: reading processes
    (``None``: chosen from the record count and device); ``device``: ``cpu``,
    ``cuda[:N]`` or ``auto`` (``None``: the model's); ``precision``: ``auto``,
    ``fp32``, ``bf16`` or ``int8``; ``stride``: window hop in samples (``None``:
    no overlap); ``min_coverage``: the shortest last window kept, as a fraction.
    """

    batch_size: int = 32
    num_workers: int | None = None
    device: str | torch.device | None = None
    precision: str = "auto"
    stride: int | None = None
    min_coverage: float = 0.5

    @classmethod
    def merge(cls, engine: "EngineOptions | None", loose: dict, where: str) -> "EngineOptions":
        """``engine`` (or the defaults) with loose keyword options on top (the older call style)."""
        import dataclasses

        unknown = sorted(set(loose) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"{where}() got unexpected keyword argument(s): {', '.join(unknown)}")
        return dataclasses.replace(engine or cls(), **loose)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelIdentity:
    """What makes features comparable: the weights' sha256 and the model's name."""

    name: str
    weights_sha256: str
    model_dir: str

    def short(self) -> str:
        """``name@<12 hex>``: written next to every embedding and zero-shot result."""
        return f"{self.name}@{self.weights_sha256[:12]}"


def model_identity(model_dir: str | os.PathLike) -> ModelIdentity:
    """Identity of a model directory (weights hash memoised by path, size and mtime)."""
    from ecgtext.fsutil import file_sha256
    from ecgtext.model.loading import find_weights

    d = Path(model_dir)
    try:
        name = json.loads((d / "config.json").read_text()).get("name") or d.name
    except (OSError, ValueError):
        name = d.name
    return ModelIdentity(name=str(name), weights_sha256=file_sha256(find_weights(d)), model_dir=str(d))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            local = os.environ.get("LOCAL_RANK")  # one GPU per torchrun process
            return torch.device(f"cuda:{int(local)}" if local is not None else "cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise E.ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto", field="device",
                            value=str(device), option="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise E.ConfigError(f"device {device!r} requested but CUDA is not available; use the CPU",
                            field="device", value=str(device), option="device")
    return dev


def load_ecg_model(source: str | os.PathLike = "dbeta-base", device: str | torch.device | None = None) -> "DBeta":
    """Only the ECG feature path of a model (eval mode), reading only its tensors.

    Same contract as ``load_model(source, components="ecg")`` (strict keys and
    shapes, safe reads, no random-weight fallback; ``source`` = model dir,
    registry name or ``hf-hub:`` id), built without random initialisation.
    """
    from ecgtext.hub.load import load_model

    return load_model(source, device=None if device is None else resolve_device(device), components="ecg")



# --------------------------------------------------------------------------- reading
@dataclass
class ReadFailure:
    """A record that could not be read/prepared, as plain data (exceptions with custom
    constructors do not survive pickling between worker processes)."""

    path: str
    kind: str  # the InputError subclass name, e.g. "FormatError"
    problem: str
    field: str | None = None  # the typed fields, so the CLI's flag hint survives worker processes
    value: object = None
    option: str | None = None

    def to_error(self) -> InputError:
        cls = getattr(E, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, InputError)):
            cls = InputError
        return cls(self.path, self.problem, field=self.field, value=self.value, option=self.option)


@dataclass
class PreparedRecord:
    """One record ready for the model (what a reading worker sends back)."""

    path: str
    windows: np.ndarray  # (W, leads, window) float32 mV, model lead order
    starts_s: np.ndarray  # (W,) float64 window starts in seconds
    source_fs: float
    duration_s: float
    missing_leads: list[str]
    flat_leads: list[str]
    nan_fraction: float


def _failure(path: str, exc: BaseException) -> ReadFailure:
    if isinstance(exc, InputError):  # keyed by the record asked for; a different culprit stays named
        problem = exc.problem if exc.path in (None, path) else f"{exc.path}: {exc.problem}"
        return ReadFailure(path, type(exc).__name__, problem, exc.field, exc.value, exc.option)
    if isinstance(exc, E.EcgTextError):  # e.g. a ConfigError about this file's contents
        return ReadFailure(path, "InputError", " ".join(str(exc).split()), exc.field, exc.value, exc.option)
    # an unexpected library error on one file must not stop a batch run; the user gets the
    # problem in words, the exception type goes to the debug log
    logger.debug("%s: unexpected %s while reading", path, type(exc).__name__, exc_info=exc)
    msg = " ".join(str(exc).split())[:300] or "no details"
    return ReadFailure(path, "InputError", f"cannot read this file (unexpected problem: {msg})")


class RecordDataset(torch.utils.data.Dataset):
    """Map-style dataset over record paths; item = :class:`PreparedRecord` or :class:`ReadFailure`."""

    def __init__(self, paths: Sequence[str], pre: PreprocessConfig, read_options: "ReadOptions | None" = None,
                 stride: int | None = None, min_coverage: float = 0.5, stream_long: bool = False):
        self.paths = list(paths)
        self.pre = pre
        self.read_options = read_options
        self.stride = stride
        self.min_coverage = min_coverage
        # long recordings become StreamedRecord markers, for a consumer that streams them
        # (iter_features); others (Ray blocks) get every record prepared whole
        self.stream_long = stream_long

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> PreparedRecord | StreamedRecord | ReadFailure:
        from ecgtext.io import read_ecg
        from ecgtext.io.stream import should_stream
        from ecgtext.preprocess import prepare

        path = self.paths[i]
        if self.stream_long and should_stream(path):  # a long recording: the model loop streams it
            return StreamedRecord(path, self.pre, self.read_options, self.stride, self.min_coverage)
        try:
            ecg = read_ecg(path, self.read_options)
            p = prepare(ecg, self.pre, stride=self.stride, min_coverage=self.min_coverage)
        except Exception as exc:  # noqa: BLE001 - every failure becomes data, see _failure
            return _failure(path, exc)
        return PreparedRecord(path=path, windows=p.windows,
                              starts_s=p.starts.astype(np.float64) / float(self.pre.sample_rate),
                              source_fs=p.source_fs, duration_s=p.duration_s,
                              missing_leads=list(p.missing_leads), flat_leads=list(p.flat_leads),
                              nan_fraction=float(p.nan_fraction))


def _identity(x):
    return x


def _open_streamed(item: StreamedRecord) -> StreamedRecord | PreparedRecord | ReadFailure:
    """Open a long record for streaming; a format that cannot be read by range is prepared whole."""
    pre, stride, min_coverage = item.pre, item.stride, item.min_coverage
    try:
        if item.open():
            return item
    except Exception as exc:  # noqa: BLE001 - every failure becomes data, see _failure
        return _failure(item.path, exc)
    from ecgtext.io import read_ecg
    from ecgtext.preprocess import prepare

    try:
        p = prepare(read_ecg(item.path, item.read_options), pre, stride=stride, min_coverage=min_coverage)
    except Exception as exc:  # noqa: BLE001
        return _failure(item.path, exc)
    return PreparedRecord(path=item.path, windows=p.windows,
                          starts_s=p.starts.astype(np.float64) / float(pre.sample_rate),
                          source_fs=p.source_fs, duration_s=p.duration_s,
                          missing_leads=list(p.missing_leads), flat_leads=list(p.flat_leads),
                          nan_fraction=float(p.nan_fraction))


def expand_records(paths: Sequence[str], read_options: "ReadOptions | None" = None
                   ) -> list[str | ReadFailure]:
    """Record keys for ``paths``: HDF5 containers become one ``file::exam`` key per exam
    (listing reads no signal); other paths are kept. A container that cannot be
    listed becomes a :class:`ReadFailure` in place."""
    from ecgtext.io import list_records
    from ecgtext.io.paths import HDF5_EXT, split_key

    out: list[str | ReadFailure] = []
    for p in paths:
        container, key = split_key(p)
        fmt = getattr(read_options, "format", None)
        if key is None and (fmt == "hdf5" or (fmt is None and container.lower().endswith(HDF5_EXT))):
            try:
                out.extend(list_records(p, read_options))
            except Exception as exc:  # noqa: BLE001
                out.append(_failure(p, exc))
        else:
            out.append(p)
    return out


def default_num_workers(n_records: int, device_type: str = "cpu") -> int:
    """Reading workers for a job: none for small jobs (process start-up costs more than
    it saves); on CPU, where reading a record costs ~1 % of the base model's time per
    core, one or two only on big machines (a worker takes cores from the model); on a
    GPU up to 4, leaving a core for the main process."""
    cpus = os.cpu_count() or 1
    if n_records < 16:
        return 0
    if device_type != "cuda":
        return min(2, cpus // 8)
    return max(0, min(4, cpus - 1))


def iter_prepared(paths: Sequence[str], pre: PreprocessConfig, read_options: "ReadOptions | None" = None,
                  *, num_workers: int | None = None, stride: int | None = None, min_coverage: float = 0.5,
                  device_type: str = "cpu") -> Iterator[PreparedRecord | ReadFailure]:
    """Read and prepare ``paths`` (HDF5 containers expanded per exam), in order."""
    items = expand_records(paths, read_options)
    keys = [it for it in items if isinstance(it, str)]
    ds = RecordDataset(keys, pre, read_options, stride=stride, min_coverage=min_coverage, stream_long=True)
    workers = default_num_workers(len(keys), device_type) if num_workers is None else max(0, int(num_workers))
    if workers == 0 or len(keys) <= 1:
        source: Iterator = (ds[i] for i in range(len(ds)))
    else:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=None, shuffle=False, num_workers=min(workers, len(keys)),
            collate_fn=_identity, prefetch_factor=4, pin_memory=False, persistent_workers=False)
        source = iter(loader)
    it = iter(source)
    for item in items:
        yield item if isinstance(item, ReadFailure) else next(it)


# --------------------------------------------------------------------------- features
@dataclass
class RecordFeatures:
    """ECG features of one record: one row per window."""

    path: str
    features: np.ndarray  # (W, D) float32 unimodal ECG features per window
    starts_s: np.ndarray  # (W,) window starts in seconds
    source_fs: float
    duration_s: float
    missing_leads: list[str]
    flat_leads: list[str] = field(default_factory=list)
    nan_fraction: float = 0.0

    @property
    def n_windows(self) -> int:
        return int(self.features.shape[0])

    def aggregate(self, how: str = "mean") -> np.ndarray:
        """(D,) float32 record feature: ``mean``/``max`` over windows, or the ``first`` window."""
        if how == "first":
            return self.features[0]
        if how == "mean":
            return self.features.mean(0, dtype=np.float64).astype(np.float32)
        if how == "max":
            return self.features.max(0)
        raise E.ConfigError(f"unknown aggregation {how!r}; expected one of {', '.join(AGGREGATES)}")


def iter_features(paths: Sequence[str], model: "DBeta", read_options: "ReadOptions | None" = None, *,
                  engine: EngineOptions | None = None, **options) -> Iterator[RecordFeatures | InputError]:
    """Stream per-record ECG features (or the record's :class:`InputError`) in input order.

    Windows of consecutive records are packed into model batches of
    ``batch_size`` windows; a record is yielded as soon as all its windows are
    through the model. ``engine`` (or the same fields as keywords) says how: see
    :class:`EngineOptions`; the precision rule is
    :func:`ecgtext.model.precision.resolve_precision`. Features come back as float32 on the CPU.
    """
    o = EngineOptions.merge(engine, options, "iter_features")
    dev = resolve_device(o.device) if o.device is not None else model.device
    source = iter_prepared(paths, model.config.preprocess, read_options, num_workers=o.num_workers,
                           stride=o.stride, min_coverage=o.min_coverage, device_type=dev.type)
    yield from features_from_prepared(source, model, batch_size=o.batch_size, device=dev, precision=o.precision)


def features_from_prepared(source: Iterable[PreparedRecord | ReadFailure], model: "DBeta", *,
                           batch_size: int = 32, device: str | torch.device | None = None,
                           precision: str = "auto") -> Iterator[RecordFeatures | InputError]:
    """The model half of :func:`iter_features`: prepared records (or read failures) in,
    per-record features (or the record's :class:`InputError`) out, in the same order.
    Engines that read elsewhere (Ray tasks) call this to run the same inference code."""
    if batch_size < 1:
        raise E.ConfigError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device) if device is not None else model.device
    if model.device != dev:
        model.to(dev)
    model.eval()
    # resolved and validated before any record is read; bf16/int8 CPU forms are built once per model
    encode = ecg_feature_fn(model, resolve_precision(precision, dev), dev)

    # records (or failures) in input order, each [item, features (W, D) filled window by
    # window as batches run, count of filled windows]; yielded from the front when complete
    queue: list[list] = []
    pending: list[tuple[int, int]] = []  # (queue index, window index) not yet run
    batch: list[np.ndarray] = []
    base = 0  # index of queue[0] in the stream

    def run_batch():
        x = torch.from_numpy(np.stack(batch))
        if dev.type == "cuda":
            x = x.pin_memory().to(dev, non_blocking=True)
        with torch.inference_mode():
            y = encode(x)
        y = y.float().cpu().numpy()
        for row, (qi, wi) in enumerate(pending):
            slot = queue[qi - base]
            slot[1][wi] = y[row]
            slot[2] += 1
        batch.clear()
        pending.clear()

    def drain() -> Iterator[RecordFeatures | InputError]:
        nonlocal base
        while queue:
            item, feats, filled = queue[0]
            if isinstance(item, ReadFailure):
                yield item.to_error()
            elif filled == (item.n_windows if isinstance(item, StreamedRecord) else len(item.windows)):
                yield RecordFeatures(path=item.path, features=feats, starts_s=item.starts_s,
                                     source_fs=item.source_fs, duration_s=item.duration_s,
                                     missing_leads=item.missing_leads, flat_leads=item.flat_leads,
                                     nan_fraction=item.nan_fraction)
            else:
                return
            queue.pop(0)
            base += 1

    def feed(qi: int, windows: Iterator[tuple[int, np.ndarray]]) -> None:
        for wi, win in windows:
            batch.append(win)
            pending.append((qi, wi))
            if len(batch) == batch_size:
                run_batch()

    for item in source:
        if isinstance(item, StreamedRecord):
            item = _open_streamed(item)
        if isinstance(item, ReadFailure):
            queue.append([item, None, 0])
        elif isinstance(item, StreamedRecord):  # windows prepared a chunk at a time (bounded memory)
            slot = [item, np.empty((item.n_windows, model.embed_dim), dtype=np.float32), 0]
            queue.append(slot)
            try:
                feed(base + len(queue) - 1, item.iter_windows())
            except Exception as exc:  # noqa: BLE001 - a bad stretch of the file fails this record only
                slot[0] = _failure(item.path, exc)
        else:
            d = model.embed_dim
            queue.append([item, np.empty((len(item.windows), d), dtype=np.float32), 0])
            feed(base + len(queue) - 1, enumerate(item.windows))
        yield from drain()
    if batch:
        run_batch()
    yield from drain()


def embed_paths(paths: Sequence[str], model: "DBeta", read_options: "ReadOptions | None" = None, *,
                aggregate: str = "mean", engine: EngineOptions | None = None, **options
                ) -> tuple[np.ndarray, list[str], list[InputError]]:
    """Unimodal ECG features per record (windows aggregated): (N_ok, D) float32, the ok
    record keys (same order; HDF5 containers expand to one key per exam), and the
    errors of records that failed."""
    if aggregate not in AGGREGATES:
        raise E.ConfigError(f"unknown aggregation {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
    feats: list[np.ndarray] = []
    keys: list[str] = []
    errs: list[InputError] = []
    options.setdefault("num_workers", 0)  # all at once: reading in this process unless asked
    o = EngineOptions.merge(engine, options, "embed_paths")
    for r in iter_features(paths, model, read_options, engine=o):
        if isinstance(r, InputError):
            errs.append(r)
        else:
            feats.append(r.aggregate(aggregate))
            keys.append(r.path)
    x = np.stack(feats).astype(np.float32) if feats else np.zeros((0, model.embed_dim), np.float32)
    return x, keys, errs
