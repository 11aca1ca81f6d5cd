"""Loading a labelled dataset from one options object (what the ``probe`` command collects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ecgtext.errors import ConfigError
from ecgtext.evaluation.datasets.base import LabelledDataset

# the zero-shot label set that matches each dataset / task
_DEFAULT_LABELS = {("ptbxl", t): f"ptbxl-{t}" for t in ("super", "sub", "form", "rhythm")}


@dataclass
class DatasetOptions:
    """Where a labelled dataset is and how to read it.

    ``inputs`` is the dataset folder (ptbxl, cinc, code15) or the manifest
    file(s) (generic). Options that do not apply to ``kind`` are ignored:
    ``rate`` (ptbxl: 500 or 100 Hz), ``classes`` (cinc: ``scored``, ``all`` or a
    label set), ``split_seed`` (datasets without official splits), and the
    generic manifest's ``data_root`` / ``path_column`` / ``label_column(s)``.
    """

    kind: str
    inputs: Sequence[str]
    task: str | None = None
    rate: int = 500
    classes: str = "scored"
    split_files: Sequence[str] = field(default_factory=list)
    split_seed: int = 0
    data_root: str | None = None
    path_column: str | None = None
    label_column: str | None = None
    label_columns: str | None = None


def load_dataset_from_options(opts: DatasetOptions) -> LabelledDataset:
    """Route ``opts`` to :func:`~ecgtext.evaluation.datasets.load_dataset` with the options of its kind."""
    from ecgtext.evaluation.datasets import load_dataset

    inputs = [str(p) for p in opts.inputs]
    if not inputs:
        raise ConfigError("no dataset folder (or manifest file) given", field="inputs")
    kw: dict[str, Any] = {}
    if opts.kind == "ptbxl":
        kw["rate"] = opts.rate
    elif opts.kind == "cinc":
        kw.update(classes=opts.classes, seed=opts.split_seed)
    elif opts.kind == "generic":
        kw.update(seed=opts.split_seed, data_root=opts.data_root, path_column=opts.path_column,
                  label_column=opts.label_column, label_columns=opts.label_columns)
    if opts.kind != "generic" and len(inputs) > 1:
        raise ConfigError(f"a {opts.kind} dataset is one folder, got {len(inputs)} paths", field="inputs",
                          value=inputs)
    root: Any = inputs if opts.kind == "generic" else inputs[0]
    return load_dataset(opts.kind, root, opts.task, split_files=[str(p) for p in opts.split_files] or None, **kw)


def default_label_set(ds: LabelledDataset, classes: str = "scored") -> str:
    """The built-in zero-shot label set that fits ``ds`` (``ptbxl-<task>``, ``code15``, ``cpsc2018``)."""
    from ecgtext.labels import builtin_label_sets

    if (ds.name, ds.task) in _DEFAULT_LABELS:
        return _DEFAULT_LABELS[(ds.name, ds.task)]
    if ds.name == "code15":
        return "code15"
    if ds.name == "cinc" and classes not in ("scored", "all"):
        return classes
    if ds.name == "cinc":
        return "cpsc2018"
    raise ConfigError(f"no default label set for {ds.label}; choose one (built-in: "
                      f"{', '.join(builtin_label_sets())}) or a JSON file", field="labels", option="labels")
