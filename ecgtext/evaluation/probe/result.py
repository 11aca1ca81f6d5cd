"""What one probe run returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgtext.evaluation.probe.head import LinearHead


@dataclass
class ProbeResult:
    """The JSON report plus what tests and plots need: test scores per seed and the heads."""

    report: dict[str, Any]
    heads: list[LinearHead]
    test_keys: list[str]
    Y_test: np.ndarray
    P_test: list[np.ndarray]  # one (N_test, C) probability matrix per seed
    subsets: dict[int, np.ndarray]  # seed -> dataset rows of the training subset
