"""Typed errors. Every bad input raises a `BiohumanError` subclass naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class BiohumanError(Exception):
    """Base class for all errors biohuman raises on purpose (bad input, failed solve, bad config)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class ConfigError(BiohumanError):
    """The configuration is invalid or names something that does not exist."""


class InputFormatError(BiohumanError):
    """A file is truncated, non-numeric, or not in the expected format."""


class MarkerError(BiohumanError):
    """Markers are missing, have unrepairable gaps, or do not match the model's marker set."""


class UnitsError(BiohumanError):
    """Units are missing, unknown or inconsistent with the data (e.g. millimetres labelled metres)."""


class SolverError(BiohumanError):
    """An OpenSim tool or a numerical solver failed or produced unusable output."""


class SpecError(BiohumanError):
    """A dataset does not follow the biohuman dataset spec."""


class ModelFileError(ConfigError):
    """A model file (.osim) uses something biohuman cannot handle (e.g. an unsupported muscle class)."""
