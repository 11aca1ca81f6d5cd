"""Deprecated location: moved to :mod:`ecgtext.inference.zeroshot` (kept so existing imports keep working)."""

from __future__ import annotations

import importlib
import warnings

_NEW = "ecgtext.inference.zeroshot"


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    warnings.warn(f"{__name__} is deprecated; import {name} from {_NEW}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_NEW), name)
