"""The simulator: the real scheduling core on a virtual clock, with simulated agents (``corral simulate``)."""

from __future__ import annotations

from corral.controller.sim.engine import DurationFn, FailFn, SimResult, SimulationError, Simulator, Span
from corral.controller.sim.fleet import Fleet, parse_shape

__all__ = ["DurationFn", "FailFn", "Fleet", "SimResult", "SimulationError", "Simulator", "Span", "parse_shape"]
