"""Draw a 12-lead ECG the way clinicians read it, with zero-shot scores beside it.

Layout: the standard 3 x 4 grid (I, II, III | aVR, aVL, aVF | V1-V3 | V4-V6),
each column 2.5 s of the same 10 s, plus a 10 s lead II rhythm strip, on ECG
paper: 1 mm = 0.04 s horizontally and 0.1 mV vertically (25 mm/s, 10 mm/mV),
thin lines every 1 mm and thick lines every 5 mm, and a 1 mV calibration pulse
at the start of each row. matplotlib (Agg backend) is imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .config import STANDARD_LEADS

if TYPE_CHECKING:  # pragma: no cover
    from .io import Ecg

GRID = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
COLUMN_S = 2.5
STRIP_S = 10.0
ROW_MV = 3.0  # 30 mm per row
MM_PER_S, MM_PER_MV = 25.0, 10.0
PAPER_MINOR, PAPER_MAJOR, TRACE = "#f6c9c9", "#e88a8a", "#111111"


def _segment(sig: np.ndarray | None, fs: float, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    if sig is None:
        return np.empty(0), np.empty(0)
    a, b = int(round(t0 * fs)), min(int(round(t1 * fs)), sig.shape[0])
    if b <= a:
        return np.empty(0), np.empty(0)
    y = sig[a:b].astype(np.float64)
    finite = np.isfinite(y)
    if finite.any():
        y = y - np.median(y[finite])  # centre each strip on its baseline
    return t0 + np.arange(b - a) / fs, y


def plot_ecg(ecg: "Ecg", out: str | os.PathLike, top: Sequence[tuple[str, float]] = (),
             score_name: str = "score", model: str | None = None, title: str | None = None,
             descriptions: dict[str, str] | None = None, dpi: int = 150) -> Path:
    """Write ``ecg`` (any lead set; missing leads are left blank) as a PNG/PDF/SVG to ``out``.

    ``top``: (code, score) pairs shown beside the tracing, best first;
    ``descriptions`` adds each code's description. Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MultipleLocator

    from ecgtext.fsutil import atomic_path

    from .io.leads import canonical_lead

    by_name = {}
    for i, name in enumerate(ecg.leads):
        by_name[canonical_lead(name) or name] = np.asarray(ecg.signal[i])
    fs = float(ecg.fs)

    n_rows = len(GRID) + 1
    x0, x1 = -0.5, STRIP_S  # room for the calibration pulse
    y_top, y_bot = ROW_MV / 2, -ROW_MV * (n_rows - 0.5)
    width_in = (x1 - x0) * MM_PER_S / 25.4 + 0.6
    height_in = (y_top - y_bot) * MM_PER_MV / 25.4 + 1.9
    fig = plt.figure(figsize=(width_in, height_in), dpi=dpi)
    ax = fig.add_axes([0.3 / width_in, 0.25 / height_in, 1 - 0.6 / width_in, 1 - 1.9 / height_in])
    ax.set_xlim(x0, x1)
    ax.set_ylim(y_bot, y_top)
    ax.set_aspect(MM_PER_MV / MM_PER_S)  # 1 mV is drawn 10 mm tall when 1 s is 25 mm wide
    ax.xaxis.set_minor_locator(MultipleLocator(0.04))
    ax.xaxis.set_major_locator(MultipleLocator(0.2))
    ax.yaxis.set_minor_locator(MultipleLocator(0.1))
    ax.yaxis.set_major_locator(MultipleLocator(0.5))
    ax.grid(which="minor", color=PAPER_MINOR, linewidth=0.3)
    ax.grid(which="major", color=PAPER_MAJOR, linewidth=0.7)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    for side in ax.spines.values():
        side.set_visible(False)

    def pulse(base: float):
        ax.plot([-0.4, -0.35, -0.35, -0.15, -0.15, -0.1], [base, base, base + 1, base + 1, base, base],
                color=TRACE, linewidth=0.8)

    for r, row in enumerate(GRID):
        base = -ROW_MV * r
        pulse(base)
        for c, lead in enumerate(row):
            t0 = c * COLUMN_S
            t, y = _segment(by_name.get(lead), fs, t0, t0 + COLUMN_S)
            ax.plot(t, base + y, color=TRACE, linewidth=0.6)
            missing = lead not in by_name
            ax.text(t0 + 0.05, base + 0.9, lead + (" (missing)" if missing else ""), fontsize=8,
                    color="#555555" if missing else TRACE, va="bottom")
            if c:  # the usual short separator between columns
                ax.plot([t0, t0], [base - 0.3, base + 0.3], color=TRACE, linewidth=0.8)
    base = -ROW_MV * len(GRID)
    pulse(base)
    t, y = _segment(by_name.get(RHYTHM_LEAD), fs, 0.0, STRIP_S)
    ax.plot(t, base + y, color=TRACE, linewidth=0.6)
    ax.text(0.05, base + 0.9, f"{RHYTHM_LEAD} (rhythm strip)", fontsize=8, va="bottom")

    head = title or ecg.path
    info = f"{ecg.duration_s:.1f} s at {fs:g} Hz · 25 mm/s · 10 mm/mV"
    if ecg.duration_s > STRIP_S:
        info += f" · first {STRIP_S:g} s shown"
    absent = [lead for lead in STANDARD_LEADS if lead not in by_name]
    if absent:
        info += " · missing: " + ", ".join(absent)
    fig.text(0.3 / width_in, 1 - 0.3 / height_in, head, fontsize=11, weight="bold", va="top")
    fig.text(0.3 / width_in, 1 - 0.62 / height_in, info, fontsize=8, va="top", color="#333333")
    if top:
        shown = "   ".join(f"{code} {val:.3g}" for code, val in top)
        line = f"Top classes ({score_name}{', ' + model if model else ''}):  {shown}"
        fig.text(0.3 / width_in, 1 - 0.95 / height_in, line, fontsize=9, va="top", color="#0b3d91")
        if descriptions:
            best = top[0][0]
            if best in descriptions:
                fig.text(0.3 / width_in, 1 - 1.27 / height_in, f"{best}: {descriptions[best]}",
                         fontsize=7.5, va="top", color="#333333", wrap=True)
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    plt.close(fig)
    return out


def plot_name(path: str) -> str:
    """A file name for a record's plot: ``rec.hea`` -> ``rec.png``, ``a.hdf5::12`` -> ``a_12.png``."""
    from .io.paths import split_key

    container, key = split_key(path)
    stem = os.path.splitext(os.path.basename(container))[0] or os.path.basename(container)
    return f"{stem}_{key}.png" if key is not None else f"{stem}.png"


def plot_roc(Y: np.ndarray, S: np.ndarray, classes: Sequence[str], path: str, title: str = "") -> str:
    """Write one ROC curve per evaluable class to ``path`` (PNG via matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from sklearn.metrics import auc as area
    from sklearn.metrics import roc_curve

    from ecgtext.fsutil import atomic_path

    curves = {}
    for j in range(len(classes)):
        # a class with one outcome in the split has no ROC curve
        if 0 < Y[:, j].sum() < len(Y):
            curves[j] = roc_curve(Y[:, j], S[:, j])[:2]
    auc = np.full(len(classes), np.nan)
    for j, (fpr, tpr) in curves.items():
        auc[j] = area(fpr, tpr)
    fig, ax = plt.subplots(figsize=(6, 6))
    for j, c in enumerate(classes):
        if j not in curves:
            continue
        fpr, tpr = curves[j]
        ax.plot(fpr, tpr, lw=1.2, label=f"{c} ({100 * auc[j]:.1f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or f"ROC, macro AUROC {100 * np.nanmean(auc) if curves else float('nan'):.2f}")
    ax.legend(fontsize=7, loc="lower right", ncol=1 + sum(~np.isnan(auc)) // 12)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return str(path)
