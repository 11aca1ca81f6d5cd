"""Limb leads derived from I and II when a file stores only those (GE MUSE, some SCP-ECG).

Einthoven and Goldberger: with the limb electrodes R, L, F, I = L - R and
II = F - R, so III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2.
Carts store the two independent limb leads and the six precordials and rebuild
the rest for display; models expect all 12, so we rebuild them the same way --
in floating point on the physical values (not in integer counts, which rounds
half an LSB). Only when the file stores *none* of III, aVR, aVL, aVF: a stored
lead is never replaced, and a partial set is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .leads import canonical_lead

DERIVED_LIMB_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")


def derive_limb_leads(signal: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Add III, aVR, aVL, aVF to ``signal`` ``(leads, samples)`` if the file stores only I and II.

    Returns ``(signal, names, derived)``: the derived leads are inserted after II
    (so I, II, V1-V6 becomes the standard 12-lead order) and listed in
    ``derived``; when nothing is derived the inputs come back unchanged and
    ``derived`` is empty. Values keep the input's unit and a floating dtype.
    """
    canon = [canonical_lead(n) for n in names]
    if "I" not in canon or "II" not in canon or any(d in canon for d in DERIVED_LIMB_LEADS):
        return signal, list(names), []
    i, ii = canon.index("I"), canon.index("II")
    sig = np.asarray(signal, dtype=np.float64)
    at = max(i, ii) + 1
    # one output array, the derived rows computed in place: a stack + concatenate of fresh
    # temporaries cost ~10x more (page faults on new memory dominate at this size)
    out = np.empty((sig.shape[0] + len(DERIVED_LIMB_LEADS), sig.shape[1]), dtype=np.float64)
    out[:at] = sig[:at]
    out[at + len(DERIVED_LIMB_LEADS):] = sig[at:]
    lead_i, lead_ii = sig[i], sig[ii]
    iii, avr, avl, avf = out[at:at + len(DERIVED_LIMB_LEADS)]
    np.subtract(lead_ii, lead_i, out=iii)
    np.add(lead_i, lead_ii, out=avr)
    avr /= -2.0
    np.divide(lead_ii, 2.0, out=avl)
    np.subtract(lead_i, avl, out=avl)
    np.divide(lead_i, 2.0, out=avf)
    np.subtract(lead_ii, avf, out=avf)
    out_names = list(names[:at]) + list(DERIVED_LIMB_LEADS) + list(names[at:])
    return out, out_names, list(DERIVED_LIMB_LEADS)
