"""Provenance: what produced a set of features or results, written next to them.

Every output that holds model numbers (``embed`` Parquet files, zero-shot JSON
lines, probe and evaluation reports) carries one :class:`Provenance` block:
the model's identity (weights sha256, name, where it was loaded from), the
precision the model actually ran in (``fp32``/``bf16``/``int8``, never
``auto``), the device type, the preprocessing contract of the weights
(sampling rate, window length, lead order, units, windowing) and the ecgtext
version. Two sets of numbers are comparable only when every compared field
agrees: resuming or appending an output, and probing on saved features, check
that and refuse otherwise with a :class:`~ecgtext.errors.ProvenanceError`
naming the field and both values.

``model_source`` is informational (the same weights may be loaded from a
registry name or from a folder) and is not compared; the weights hash is.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ecgtext.errors import ProvenanceError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ecgtext.model.dbeta import DBeta

PROVENANCE_FORMAT = 1
PARQUET_KEY = b"ecgtext"  # the embed writer's metadata key; the block sits under "provenance"
PRECISIONS = ("fp32", "bf16", "int8")
# compared for resume / probe, in the order a difference is reported
COMPARED = ("weights_sha256", "model_name", "precision", "device_type", "preprocess", "ecgtext_version")


@dataclass(frozen=True)
class Provenance:
    """What made a set of ECG features (see the module docstring)."""

    model_name: str
    weights_sha256: str
    precision: str  # resolved: fp32, bf16 or int8
    device_type: str  # cpu, cuda, mps, ...
    preprocess: dict[str, Any]  # sample_rate (Hz), window (samples), leads, units, filter, normalize, windowing
    ecgtext_version: str
    model_source: str | None = None  # informational: registry name, hf-hub id or folder as given
    format: int = field(default=PROVENANCE_FORMAT)

    @property
    def model_id(self) -> str:
        """``name@<12 hex>``, as in the ``model`` column of embed outputs."""
        return f"{self.model_name}@{self.weights_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips through :meth:`from_dict`)."""
        d = dataclasses.asdict(self)
        d["model_id"] = self.model_id
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Provenance":
        """Parse a provenance block; anything malformed is a :class:`ProvenanceError`."""
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"{where}: the provenance block is not an object", path=where,
                                  field="provenance", value=type(data).__name__)
        data = {k: v for k, v in data.items() if k != "model_id"}  # derived, written for readers
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - names)
        if missing or unknown:
            what = "; ".join(x for x in (missing and f"missing {', '.join(missing)}",
                                         unknown and f"unknown {', '.join(unknown)}") if x)
            raise ProvenanceError(f"{where}: unreadable provenance block ({what})", path=where,
                                  field="provenance", value=missing or unknown)
        if data.get("format") != PROVENANCE_FORMAT:
            raise ProvenanceError(f"{where}: provenance format {data.get('format')!r} is not one this "
                                  f"ecgtext reads ({PROVENANCE_FORMAT})", path=where, field="provenance format",
                                  value=data.get("format"))
        if not isinstance(data["preprocess"], Mapping) or data["precision"] not in PRECISIONS:
            raise ProvenanceError(f"{where}: unreadable provenance block (precision {data['precision']!r}, "
                                  "preprocess must be an object)", path=where, field="provenance")
        return cls(**{**data, "preprocess": dict(data["preprocess"])})

    def differences(self, other: "Provenance") -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for every compared field that differs;
        preprocessing differences are named per entry (``preprocess.sample_rate``)."""
        out: list[tuple[str, Any, Any]] = []
        for name in COMPARED:
            a, b = getattr(self, name), getattr(other, name)
            if name == "preprocess":
                for k in sorted(set(a) | set(b)):
                    if a.get(k) != b.get(k):
                        out.append((f"preprocess.{k}", a.get(k), b.get(k)))
            elif a != b:
                out.append((name, a, b))
        return out

    def check_same(self, current: "Provenance", where: str, *, option: str | None = None,
                   advice: str = "") -> None:
        """Refuse when ``current`` (this run) differs from ``self`` (what ``where`` holds).

        The error names the first differing field and both values (recorded first);
        ``option`` is the option that overrides the check (the CLI shows its flag).
        """
        diff = self.differences(current)
        if not diff:
            return
        name, recorded, now = diff[0]
        more = f" (and {len(diff) - 1} more difference(s))" if len(diff) > 1 else ""
        raise ProvenanceError(f"{where}: {name} differs: {_show(recorded)} in the recorded output, "
                              f"{_show(now)} now{more}{advice}", path=where, field=name,
                              value=(recorded, now), option=option)


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256: the short form is what people compare
    if isinstance(value, list) and len(value) > 6:
        return ",".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def resolve_precision(device: "torch.device | str", precision: str | None = "auto") -> str:
    """The precision a model on ``device`` runs in for the ``precision`` option (``auto``
    resolved by :func:`ecgtext.model.precision.resolve_precision`, the one rule)."""
    from ecgtext.model.precision import resolve_precision as resolve

    return resolve(precision, device)


def provenance_for(model: "DBeta", *, device: "torch.device | str", precision: str = "auto",
                   source: str | os.PathLike | None = None, stride: int | None = None,
                   min_coverage: float = 0.5) -> Provenance:
    """The provenance of features ``model`` computes on ``device`` with the ``precision``
    option (resolved) and the windowing ``stride`` / ``min_coverage`` (defaults as in
    :func:`~ecgtext.inference.engine.iter_features`)."""
    if model.model_dir is None:
        raise ProvenanceError("the model has no directory, so its weights cannot be identified; load it "
                              "with ecgtext.load_model(...)", field="model")
    return _provenance(model.model_dir, model.config.preprocess, device=device, precision=precision,
                       source=source if source is not None else model.model_dir, stride=stride,
                       min_coverage=min_coverage)


def provenance_of_source(source: str | os.PathLike, *, device: "torch.device | str" = "cpu",
                         precision: str = "auto", stride: int | None = None,
                         min_coverage: float = 0.5) -> Provenance:
    """Like :func:`provenance_for` for a model directory, registry name or ``hf-hub:`` id,
    without loading its weights (only hashed): what features of that model would record."""
    from ecgtext.config import load_config
    from ecgtext.hub.load import resolve_source

    model_dir = resolve_source(source)
    return _provenance(model_dir, load_config(model_dir).preprocess, device=device, precision=precision,
                       source=source, stride=stride, min_coverage=min_coverage)


def _provenance(model_dir: str | os.PathLike, pre: Any, *, device: "torch.device | str", precision: str,
                source: str | os.PathLike | None, stride: int | None, min_coverage: float) -> Provenance:
    import torch

    from ecgtext import __version__
    from ecgtext.inference.engine import model_identity, resolve_device

    ident = model_identity(model_dir)
    contract = {"sample_rate": float(pre.sample_rate), "window": int(pre.window), "leads": list(pre.leads),
                "units": pre.units, "filter": pre.filter, "normalize": pre.normalize,
                "stride": None if stride is None else int(stride), "min_coverage": float(min_coverage)}
    dev = device if isinstance(device, torch.device) else resolve_device(device)  # "auto" -> the real one
    return Provenance(model_name=ident.name, weights_sha256=ident.weights_sha256,
                      precision=resolve_precision(dev, precision), device_type=dev.type,
                      preprocess=contract, ecgtext_version=__version__,
                      model_source=None if source is None else str(source))


def parquet_provenance(path: str | os.PathLike) -> Provenance | None:
    """The provenance block of an ``embed`` Parquet file (or shard folder); ``None`` when the
    file carries no ecgtext metadata at all. A block that is there but cannot be read is a
    :class:`ProvenanceError`, never ignored."""
    import pyarrow.parquet as pq

    p = os.fspath(path)
    target = p
    if os.path.isdir(p):
        files = sorted(f for f in os.listdir(p) if f.endswith(".parquet") and not f.startswith(("_", ".")))
        if not files:
            return None
        target = os.path.join(p, files[0])
    return provenance_from_metadata(pq.read_schema(target).metadata, p)


def provenance_from_metadata(meta: Mapping[bytes, bytes] | None, where: str) -> Provenance | None:
    """:class:`Provenance` from Parquet key-value metadata (see :func:`parquet_provenance`)."""
    if not meta or PARQUET_KEY not in meta:
        return None
    try:
        block = json.loads(meta[PARQUET_KEY])
    except (ValueError, UnicodeDecodeError):
        raise ProvenanceError(f"{where}: the ecgtext metadata block is not valid JSON", path=where,
                              field="provenance") from None
    if not isinstance(block, Mapping) or "provenance" not in block:
        raise ProvenanceError(f"{where}: the ecgtext metadata has no provenance block (written by an "
                              "older ecgtext?)", path=where, field="provenance")
    return Provenance.from_dict(block["provenance"], where)


FEATURE_FIELDS = ("weights_sha256", "precision", "preprocess")  # what makes two feature sets comparable


def check_features(recorded: Provenance | None, expected: Provenance | None, where: str, *,
                   force: bool = False, fields: tuple[str, ...] = FEATURE_FIELDS) -> list[str]:
    """Check that saved features match what a run expects (by default: the same weights,
    precision and preprocessing; the model's name, device and ecgtext version may differ).

    Refuses (:class:`ProvenanceError` with ``option="force"``) when a field in
    ``fields`` differs or when the features carry no provenance; with ``force``
    returns those findings as notes instead. ``expected=None`` (nothing to compare
    with) only requires that ``recorded`` exists.
    """
    if recorded is None:
        if force:
            return [f"{where}: features carry no provenance (not checked)"]
        raise ProvenanceError(f"{where}: the features carry no provenance, so they cannot be checked "
                              "against the model", path=where, field="provenance", option="force")
    if expected is None:
        return []
    diff = [d for d in recorded.differences(expected) if d[0].split(".")[0] in fields]
    if not diff:
        return []
    if force:
        return [f"{where}: {n} differs ({_show(a)} in the features, {_show(b)} now); used anyway"
                for n, a, b in diff]
    name, a, b = diff[0]
    raise ProvenanceError(f"{where}: features were made with {name} {_show(a)}, this run uses {_show(b)}",
                          path=where, field=name, value=(a, b), option="force")
