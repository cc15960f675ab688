"""Synthetic subjects: stature, mass and non-uniform per-segment scale factors.

Each subject is the generic Rajagopal2015 model scaled segment by segment: a stature factor
(height / 1.70 m) times an individual proportion factor per segment drawn from a log-normal
distribution (about 4 % standard deviation, clipped to +-8 %), in line with the spread of
segment-to-stature ratios in anthropometric surveys (e.g. ANSUR II). Mass follows from a body
mass index drawn from the configured range.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from biohuman.motion.library import GENERIC_HEIGHT_M

SEGMENTS = ("pelvis", "femur", "tibia", "foot", "torso", "humerus", "forearm", "hand")
"""Segment groups that receive one scale factor each (both sides share it)."""


@dataclass(frozen=True)
class SubjectSpec:
    """A synthetic subject: id, stature (m), mass (kg) and per-segment scale factors."""

    subject_id: str
    height_m: float
    mass_kg: float
    segment_scales: dict[str, float]
    seed: int

    def to_dict(self) -> dict:
        """Plain-data form for YAML/JSON."""
        return asdict(self)


def sample_subjects(
    count: int,
    seed: int,
    *,
    height_range: tuple[float, float] = (1.55, 1.95),
    bmi_range: tuple[float, float] = (19.0, 28.0),
    proportion_sd: float = 0.04,
    proportion_clip: float = 0.08,
    prefix: str = "syn",
) -> list[SubjectSpec]:
    """Draw `count` subjects reproducibly from `seed` (same seed -> same subjects).

    Heights are spread over the range (stratified) so that even a 3-subject run spans short to
    tall; each segment factor = height / 1.70 * exp(N(0, proportion_sd)) clipped to
    +-proportion_clip around the stature factor.
    """
    rng = np.random.default_rng(seed)
    lo, hi = height_range
    edges = np.linspace(lo, hi, count + 1)
    heights = rng.uniform(edges[:-1], edges[1:])
    rng.shuffle(heights)
    subjects = []
    for i, h in enumerate(heights):
        bmi = rng.uniform(*bmi_range)
        base = h / GENERIC_HEIGHT_M
        dev = np.clip(rng.normal(0.0, proportion_sd, len(SEGMENTS)), -proportion_clip, proportion_clip)
        scales = {seg: float(round(base * np.exp(d), 5)) for seg, d in zip(SEGMENTS, dev)}
        subjects.append(
            SubjectSpec(
                subject_id=f"{prefix}{i + 1:02d}",
                height_m=float(round(h, 4)),
                mass_kg=float(round(bmi * h * h, 2)),
                segment_scales=scales,
                seed=int(rng.integers(0, 2**31 - 1)),
            )
        )
    return subjects
