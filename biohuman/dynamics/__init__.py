"""Dynamics: filtering, OpenSim forward kinematics, ground-force estimation (and, later, batched
inverse dynamics and static optimization)."""

from biohuman.dynamics.filters import CUTOFF_BY_MOTION, FilterError, cutoff_for, lowpass, savgol_smooth
from biohuman.dynamics.grf import (
    ContactConfig,
    GroundForces,
    estimate_grf,
    load_measured_grf,
    write_external_loads_xml,
    write_grf_mot,
)
from biohuman.dynamics.kinematics import body_kinematics, center_of_mass, forward_kinematics, joint_centers

__all__ = [
    "CUTOFF_BY_MOTION",
    "ContactConfig",
    "FilterError",
    "GroundForces",
    "body_kinematics",
    "center_of_mass",
    "cutoff_for",
    "estimate_grf",
    "forward_kinematics",
    "joint_centers",
    "load_measured_grf",
    "lowpass",
    "savgol_smooth",
    "write_external_loads_xml",
    "write_grf_mot",
]
