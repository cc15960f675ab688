"""OpenSim wrappers: model access, scaling, inverse kinematics, inverse dynamics, static optimization.

Every tool runs from a setup XML that is written first and reloaded (tools assembled in Python can
lose settings); the filled setup is saved beside each output, and outputs stay OpenSim-readable.
Coordinates files written here are in radians with `inDegrees=no`.
"""

from biohuman.osim.id import generalized_force_columns, prepare_coordinates, run_id
from biohuman.osim.ik import IKResult, ik_marker_weights, run_ik
from biohuman.osim.scale import (
    DEFAULT_MEASUREMENTS,
    LOWER_LIMB_STATIC_POSE,
    SEGMENT_BODIES,
    Measurement,
    ScaleResult,
    body_scale_factors,
    load_measurements,
    read_scale_set,
    scale_model,
    scale_model_manual,
)
from biohuman.osim.so import SOResult, auto_reserves, parse_so_log, run_static_optimization

__all__ = [
    "DEFAULT_MEASUREMENTS", "IKResult", "LOWER_LIMB_STATIC_POSE", "Measurement", "SEGMENT_BODIES", "SOResult",
    "ScaleResult", "auto_reserves", "body_scale_factors", "generalized_force_columns", "ik_marker_weights",
    "load_measurements", "parse_so_log", "prepare_coordinates", "read_scale_set", "run_id", "run_ik",
    "run_static_optimization", "scale_model", "scale_model_manual",
]
