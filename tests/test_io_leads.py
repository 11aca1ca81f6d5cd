"""Lead names: spellings, the user's map, and reordering into the model's order by name."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import PTBXL, base_pre

from ecgtext.config import STANDARD_LEADS
from ecgtext.errors import ConfigError, LeadError
from ecgtext.io import Ecg, ReadOptions, read_ecg
from ecgtext.io.leads import canonical_lead, parse_lead_list, parse_lead_map, resolve_leads
from ecgtext.preprocess import prepare


@pytest.mark.parametrize("raw,canon", [
    ("I", "I"), ("i", "I"), ("DI", "I"), ("D1", "I"), ("ii", "II"), ("DII", "II"), ("DIII", "III"),
    ("AVR", "aVR"), ("avl", "aVL"), ("aVF", "aVF"), ("v1", "V1"), ("V6", "V6"), (" Lead II ", "II"),
    ("LEAD_V3", "V3"), ("vx", "vx"), ("VZ", "vz"), ("V4R", "V4R"),
    ("MLII", None), ("ECG 1", None), ("-aVR", None), ("V7x", None), ("", None),
])
def test_canonical_names(raw, canon):
    assert canonical_lead(raw) == canon


def test_lead_lists_and_maps():
    assert parse_lead_list("standard") == list(STANDARD_LEADS)
    assert parse_lead_list("I, II ,V1") == ["I", "II", "V1"]
    assert parse_lead_map(["ECG 1=I", "MLII = II", "Resp=-"]) == {"ECG 1": "I", "MLII": "II", "Resp": "-"}
    for bad in (["MLII"], ["=II"], ["MLII=Lead 13"]):
        with pytest.raises(ConfigError):
            parse_lead_map(bad)
    with pytest.raises(ConfigError):
        parse_lead_list("I,,II")


def test_resolution_reports_ignored_and_rejects_unknown_and_duplicates():
    sel = resolve_leads(["i", "II", "vx", "vy", "vz"], ReadOptions(), "f")
    assert sel.leads == ["I", "II"] and sel.keep == [0, 1] and sel.ignored == ["vx", "vy", "vz"]
    with pytest.raises(LeadError, match=r"^f: unknown lead name\(s\) 'Pleth'"):
        resolve_leads(["I", "Pleth"], ReadOptions(), "f")
    assert resolve_leads(["I", "Pleth"], ReadOptions(ignore_unknown_leads=True), "f").ignored == ["Pleth"]
    with pytest.raises(LeadError, match="appears twice"):
        resolve_leads(["II", "DII"], ReadOptions(), "f")
    with pytest.raises(LeadError, match="no usable leads"):
        resolve_leads(["vx"], ReadOptions(), "f")


def test_dbeta_base_order_moves_avl_and_avf_by_name():
    ecg = read_ecg(PTBXL / "00001_hr.hea")  # file order: ... aVL (4), aVF (5) ...
    pre = base_pre()
    assert pre.leads[4:6] == ["aVF", "aVL"]
    win = prepare(ecg, pre).windows[0]
    np.testing.assert_array_equal(win[pre.leads.index("aVF")], ecg.signal[5])
    np.testing.assert_array_equal(win[pre.leads.index("aVL")], ecg.signal[4])
    others = [i for i, lead in enumerate(pre.leads) if lead not in ("aVF", "aVL")]
    np.testing.assert_array_equal(win[others], ecg.signal[others])


def test_any_file_order_gives_the_same_model_tensor():
    ecg = read_ecg(PTBXL / "00002_hr.hea")
    perm = np.random.default_rng(0).permutation(12)
    shuffled = Ecg(ecg.signal[perm], ecg.fs, [ecg.meta["file_leads"][i] for i in perm], "shuffled")
    np.testing.assert_array_equal(prepare(shuffled, base_pre()).windows,
                                  prepare(ecg, base_pre()).windows)


def test_missing_leads_are_zero_and_reported():
    ecg = read_ecg(PTBXL / "00003_hr.hea")
    limb = Ecg(ecg.signal[:6], ecg.fs, ecg.leads[:6], "limb-only")
    out = prepare(limb, base_pre())
    assert out.missing_leads == ["V1", "V2", "V3", "V4", "V5", "V6"]
    assert not out.windows[0, 6:].any() and out.windows[0, :6].any()
    with pytest.raises(LeadError, match="none of the model's leads"):
        prepare(Ecg(ecg.signal[:1], ecg.fs, ["V4R"], "x"), base_pre())
