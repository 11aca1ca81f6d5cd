"""Shared Typer options for every subcommand that reads ECGs.

Two ways to use them. Declare the parameters yourself and build the options::

    def command(inputs: list[str], fs: FsOption = None, leads: LeadsOption = None, ...):
        opts = read_options(fs=fs, leads=leads, ...)

or let the decorator add all of them and pass one ``ReadOptions``::

    @with_read_options
    def command(inputs: list[str], read_options: ReadOptions):  # ReadOptions imported lazily
        ...

Import-light on purpose (no numpy/torch): ``ecgtext --help`` imports this.
"""

from __future__ import annotations

import enum
import functools
import inspect
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer

if TYPE_CHECKING:
    from ..io.record import ReadOptions

PANEL = "Reading ECG files"
PERF = "Performance"


class Score(str, enum.Enum):
    """How an ECG is scored against text (zeroshot, search)."""

    raw = "raw"
    cosine = "cosine"
    softmax = "softmax"


class ReportFormat(str, enum.Enum):
    """Output formats shared by `probe` and `predict`."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class Precision(str, enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


# options of the commands that run a model over ECG files (zeroshot, embed)
PathsArgument = Annotated[list[str], typer.Argument(
    help="ECG files, folders (searched recursively), globs, or '-' to read paths from stdin.",
    show_default=False)]
ModelOption = Annotated[str, typer.Option(
    "--model", "-m", help="Model directory, registered name or hf-hub:org/repo.")]
BatchSizeOption = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, rich_help_panel=PERF, help="Windows per model batch.")]
NumWorkersOption = Annotated[Optional[int], typer.Option(
    "--num-workers", "-j", min=0, rich_help_panel=PERF,
    help="Reading processes (default: 0 for a few records, else up to 4).", show_default=False)]
DeviceOption = Annotated[str, typer.Option(
    "--device", rich_help_panel=PERF, help="cpu, cuda, cuda:N or auto (CUDA when available).")]
PrecisionOption = Annotated[Precision, typer.Option(
    "--precision", rich_help_panel=PERF,
    help="auto: bf16 on a GPU and on CPUs with native bf16 (AVX512-BF16, AMX), else fp32; "
         "ECGTEXT_PRECISION overrides auto. int8 (CPU, opt-in) needs torchao and VNNI/AMX.")]


FsOption = Annotated[Optional[float], typer.Option(
    "--fs", rich_help_panel=PANEL,
    help="Sampling rate in Hz, for files that do not state it (.npy, .csv, plain .mat, HDF5).")]
LeadsOption = Annotated[Optional[str], typer.Option(
    "--leads", rich_help_panel=PANEL,
    help="Lead names in file order, comma-separated, for files that do not name their leads; "
         "'standard' = I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6.")]
UnitsOption = Annotated[Optional[str], typer.Option(
    "--units", rich_help_panel=PANEL,
    help="Units of the stored values when the file does not state them: V, mV, uV, or adc "
         "(with --gain). Default: mV, checked for plausible amplitudes.")]
GainOption = Annotated[Optional[float], typer.Option(
    "--gain", rich_help_panel=PANEL,
    help="ADC units per mV, for raw integer files (implies --units adc).")]
LeadMapOption = Annotated[Optional[list[str]], typer.Option(
    "--lead-map", rich_help_panel=PANEL,
    help="Rename a channel, OLD=NEW (repeatable), e.g. --lead-map MLII=II --lead-map 'ECG 1=I'; "
         "NEW '-' drops the channel.")]
MatKeyOption = Annotated[Optional[str], typer.Option(
    "--mat-key", rich_help_panel=PANEL,
    help="Variable (.mat), dataset (HDF5) or array (.npz) holding the signal, if there are several.")]
LayoutOption = Annotated[Optional[str], typer.Option(
    "--layout", rich_help_panel=PANEL,
    help="Array axis order: leads-first or samples-first (guessed only when unambiguous).")]
InputFormatOption = Annotated[Optional[str], typer.Option(
    "--input-format", rich_help_panel=PANEL,
    help="Force a reader: wfdb, mat, hdf5, npy, csv, muse (GE MUSE XML), philips (Philips Sierra/PageWriter "
         "XML), aecg (HL7 aECG), dicom, scp (SCP-ECG), ishne (ISHNE Holter) or edf (EDF/EDF+/BDF). "
         "Default: from the file's content and extension.")]
IgnoreUnknownLeadsOption = Annotated[bool, typer.Option(
    "--ignore-unknown-leads", rich_help_panel=PANEL,
    help="Drop channels with unrecognised names instead of failing.")]
IncludeIdentifiersOption = Annotated[bool, typer.Option(
    "--include-identifiers", rich_help_panel=PANEL,
    help="Read patient names, IDs and birth dates from clinical files (MUSE, Philips, aECG, DICOM, "
         "SCP-ECG, ISHNE, EDF+) into the record's metadata (meta[\"patient\"]). Off by default: "
         "they never reach metadata, outputs, logs or messages.")]
MinCoverageOption = Annotated[float, typer.Option(
    "--min-coverage", min=0.0, max=1.0, rich_help_panel=PANEL,
    help="Reject records shorter than this fraction of the model's window (0 accepts any length).")]

_PARAMS: list[tuple[str, Any, Any]] = [
    ("fs", FsOption, None),
    ("leads", LeadsOption, None),
    ("units", UnitsOption, None),
    ("gain", GainOption, None),
    ("lead_map", LeadMapOption, None),
    ("mat_key", MatKeyOption, None),
    ("layout", LayoutOption, None),
    ("input_format", InputFormatOption, None),
    ("ignore_unknown_leads", IgnoreUnknownLeadsOption, False),
    ("include_identifiers", IncludeIdentifiersOption, False),
]
READ_OPTION_NAMES = tuple(name for name, _, _ in _PARAMS)


def read_options(fs: float | None = None, leads: str | None = None, units: str | None = None,
                 gain: float | None = None, lead_map: list[str] | None = None,
                 mat_key: str | None = None, layout: str | None = None,
                 input_format: str | None = None, ignore_unknown_leads: bool = False,
                 include_identifiers: bool = False) -> "ReadOptions":
    """Build :class:`~ecgtext.io.ReadOptions` from the option values.

    Invalid values (``--units furlongs``, ``--lead-map foo``) raise
    :class:`~ecgtext.errors.ConfigError`, which the CLI prints as one line.
    """
    from ..io.leads import parse_lead_map
    from ..io.record import ReadOptions

    return ReadOptions(fs=fs, leads=leads, units=units, gain=gain,
                       lead_map=parse_lead_map(lead_map or []), mat_key=mat_key, layout=layout,
                       format=input_format, ignore_unknown_leads=ignore_unknown_leads,
                       include_identifiers=include_identifiers)


def with_read_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared reading options to a Typer command; it receives ``read_options``.

    The decorated function must have a ``read_options`` parameter; the options
    are appended to its signature (after its own parameters) for Typer to parse.
    """
    sig = inspect.signature(func, eval_str=True)
    if "read_options" not in sig.parameters:
        raise TypeError(f"{func.__name__} needs a 'read_options' parameter")
    own = [p for p in sig.parameters.values() if p.name != "read_options"]
    clash = set(READ_OPTION_NAMES) & {p.name for p in own}
    if clash:
        raise TypeError(f"{func.__name__} already has parameter(s) {sorted(clash)}")
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
             for name, ann, default in _PARAMS]
    # keyword-only parameters must come after positional ones
    positional = [p for p in own if p.kind != inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind == inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in READ_OPTION_NAMES if name in kwargs}
        kwargs["read_options"] = read_options(**values)
        return func(*args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=positional + keyword + added)  # type: ignore[attr-defined]
    return wrapper
