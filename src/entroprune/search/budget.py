"""What a policy may spend: a fraction of the unpruned net's MACs and, when asked, of its parameters and of its
predicted latency on the deployment runtime. Every one must hold; the action wall, the fixed policies and the
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
    as ``latency`` (a fitted :class:`~entroprune.latency.LatencyModel`) predicts it; ``params_target``: fraction
    of the parameters kept."""

    structure: Structure
    macs_target: float
    latency: LatencyModel | None = None
    latency_target: float | None = None
    params_target: float | None = None

    def __post_init__(self) -> None:
        if (self.latency is None) != (self.latency_target is None):
            raise ConfigError("`latency_target` needs a latency model and a latency model a `latency_target`")
        if self.latency_target is not None and not 0 < self.latency_target <= 1:
            raise ConfigError(f"`latency_target` must lie in (0, 1] (fraction of the latency kept), "
                              f"got {self.latency_target}")

    @property
    def beyond_macs(self) -> bool:
        """A target besides the MACs holds (callers that know only MACs must then ask this object)."""
        return self.latency is not None or self.params_target is not None

    def macs(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        return self.structure.macs_batch(rows / self.structure.full_counts()) / self.structure.total_macs

    def latency_fraction(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.latency is None else self.latency.fraction(np.atleast_2d(rows))

    def params_fraction(self, rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(np.asarray(rows, dtype=float))
        return self.structure.params_batch(rows / self.structure.full_counts()) / self.structure.total_params

    def _others(self, rows: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Each target besides the MACs with what ``rows`` spend of it."""
        lat = self.latency_fraction(rows)
        pairs = [] if lat is None or self.latency_target is None else [(lat, self.latency_target)]
        if self.params_target is not None:
            pairs.append((self.params_fraction(rows), self.params_target))
        return pairs

    def fits(self, rows: np.ndarray, slack: float = 0.0) -> np.ndarray:
        """Rows of counts within every target (times ``1 + slack``)."""
        ok = self.macs(rows) <= self.macs_target * (1 + slack)  # slack 0: exactly the target
        for spent, target in self._others(rows):
            ok = ok & (spent <= target * (1 + slack))
        return ok

    def reaches(self, rows: np.ndarray, under: float = 0.0) -> np.ndarray:
        """Rows that spend at least one budget to within ``under`` of its target: nothing left unused."""
        ok = self.macs(rows) >= self.macs_target * (1 - under)
        for spent, target in self._others(rows):
            ok = ok | (spent >= target * (1 - under))
        return ok


__all__ = ["Budget"]
