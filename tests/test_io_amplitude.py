"""Amplitude plausibility on every record (stated units or not) and prepare's guards."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import PTBXL, base_pre

from ecgtext.errors import SignalError
from ecgtext.io import Ecg, ReadOptions, read_ecg
from ecgtext.preprocess import prepare


def _ptbxl_with_units(tmp_path, unit: str, scale: float) -> str:
    """00001_hr with every gain multiplied by ``scale`` and units ``unit`` (same digital samples)."""
    lines = (PTBXL / "00001_hr.hea").read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        parts = line.split()
        gain, _, rest = parts[2].partition("(")
        parts[2] = f"{float(gain) * scale:g}({rest.split(')')[0]})/{unit}"
        out.append(" ".join(parts))
    (tmp_path / "00001_hr.hea").write_text("\n".join(out) + "\n", encoding="utf-8")
    (tmp_path / "00001_hr.dat").write_bytes((PTBXL / "00001_hr.dat").read_bytes())
    return str(tmp_path / "00001_hr.hea")


def test_microvolt_data_under_a_millivolt_header_is_an_error(tmp_path):
    # gain / 1000 -> the physical values are 1000x larger: µV numbers labelled mV
    path = _ptbxl_with_units(tmp_path, "mV", 1e-3)
    with pytest.raises(SignalError) as err:
        read_ecg(path)
    assert "µV data labelled mV, 1000x too large" in str(err.value)
    assert err.value.option == "units" and err.value.field == "units" and path in str(err.value)
    ecg = read_ecg(path, ReadOptions(units="uV"))  # the override applies because the header is implausible
    np.testing.assert_allclose(ecg.signal, read_ecg(PTBXL / "00001_hr.hea").signal, rtol=1e-5, atol=1e-7)
    assert ecg.meta["units_overridden"] == ["mV"] and ecg.meta["units_source"] == "option"


def test_millivolt_data_under_a_microvolt_header_is_an_error(tmp_path):
    path = _ptbxl_with_units(tmp_path, "µV", 1.0)
    with pytest.raises(SignalError, match="mV data labelled µV, 1000x too small"):
        read_ecg(path)


def test_plausible_stated_units_are_not_overridden(tmp_path):
    ecg = read_ecg(PTBXL / "00001_hr.hea", ReadOptions(units="uV"))
    assert ecg.meta["units"] == "mV" and "units_overridden" not in ecg.meta


@pytest.mark.parametrize("value", [3e38, -3e38, np.inf, 2e4])
def test_absurd_values_never_pass(tmp_path, value):
    x = read_ecg(PTBXL / "00001_hr.hea").signal.copy()
    x[3, 100:110] = value
    np.save(tmp_path / "a.npy", x)
    with pytest.raises(SignalError, match="beyond any ECG") as err:
        read_ecg(tmp_path / "a.npy", ReadOptions(fs=500, leads="standard", units="mV"))
    assert err.value.option == "units"


@pytest.mark.parametrize("fs", [0.0, -500.0, float("nan"), 1e9, 0.001])
def test_prepare_validates_the_rate(fs):
    ecg = read_ecg(PTBXL / "00001_hr.hea")
    ecg.fs = fs
    with pytest.raises(SignalError, match="sampling rate") as err:
        prepare(ecg, base_pre())
    assert err.value.option == "fs"


def test_prepare_bounds_memory_before_resampling():
    x = np.zeros((12, 1000), dtype=np.float32)
    ecg = Ecg(signal=x, fs=50.0, leads=list(base_pre().leads), path="long.npy")
    with pytest.raises(SignalError, match="GiB to resample"):
        prepare(ecg, base_pre(), max_bytes=1000)
    with pytest.raises(SignalError, match="GiB to resample"):  # tiny stride: too many windows
        prepare(ecg, base_pre(), stride=1, max_bytes=50 * 2 ** 20)
