"""Deprecated location: moved to :mod:`ecgtext.evaluation.datasets`.

Importing this package (or one of its old submodules, e.g. ``ecgtext.datasets.ptbxl``)
gives the modules of the new location, so classes keep one identity.
"""

from __future__ import annotations

import importlib
import sys
import warnings

_NEW = "ecgtext.evaluation.datasets"
_SUBMODULES = ("base", "cinc", "code15", "features", "generic", "ptbxl", "snomed", "splits")

warnings.warn(f"ecgtext.datasets is deprecated; use {_NEW}", DeprecationWarning, stacklevel=2)
for _sub in _SUBMODULES:
    sys.modules[f"{__name__}.{_sub}"] = importlib.import_module(f"{_NEW}.{_sub}")


def __getattr__(name: str):
    return getattr(importlib.import_module(_NEW), name)
