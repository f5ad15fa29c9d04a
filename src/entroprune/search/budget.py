"""What a policy may spend: a fraction of the unpruned net's MACs and, when asked, of its predicted
latency on the deployment runtime. Both must hold; the action wall, the fixed policies and the
tolerance check all ask this one object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..latency import LatencyModel
from ..structure import Structure


@dataclass
class Budget:
    """``macs_target``: fraction of the MACs kept; ``latency_target``: fraction of the latency kept,
    as ``latency`` (a fitted :class:`~entroprune.latency.LatencyModel`) predicts it."""

    structure: Structure
    macs_target: float
    latency: LatencyModel | None = None
    latency_target: float | None = None

    def __post_init__(self) -> None:
        if (self.latency is None) != (self.latency_target is None):
            raise ConfigError("`latency_target` needs a latency model and a latency model a `latency_target`")
        if self.latency_target is not None and not 0 < self.latency_target <= 1:
            raise ConfigError(f"`latency_target` must lie in (0, 1] (fraction of the latency kept), "
                              f"got {self.latency_target}")

    def macs(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        return self.structure.macs_batch(rows / self.structure.full_counts()) / self.structure.total_macs

    def latency_fraction(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.latency is None else self.latency.fraction(np.atleast_2d(rows))

    def fits(self, rows: np.ndarray, slack: float = 0.0) -> np.ndarray:
        """Rows of counts within every target (times ``1 + slack``)."""
        ok = self.macs(rows) <= self.macs_target * (1 + slack)  # slack 0: exactly the target
        lat = self.latency_fraction(rows)
        return ok if lat is None else ok & (lat <= self.latency_target * (1 + slack))

    def reaches(self, rows: np.ndarray, under: float = 0.0) -> np.ndarray:
        """Rows that spend at least one budget to within ``under`` of its target: nothing left unused."""
        ok = self.macs(rows) >= self.macs_target * (1 - under)
        lat = self.latency_fraction(rows)
        return ok if lat is None else ok | (lat >= self.latency_target * (1 - under))


__all__ = ["Budget"]
