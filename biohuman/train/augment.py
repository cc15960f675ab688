"""Training-data augmentation: left-right mirror images of whole (trial, camera) sequences
(`biohuman.nn.mirror` says why the labels of a flipped video are known exactly). A mirrored
sequence doubles what the model sees of each training trial without new labelling; it is used for
training only, never for validation or test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biohuman.nn.mirror import mirror_inputs, mirror_outputs

_LABELS: dict[str, str] = {"y_coords": "coords", "y_activation": "activation", "y_joints": "joints",
                           "y_root": "root", "y_pelvis_rot6d": "pelvis_rot6d"}


def mirror_sequence(seq: Mapping[str, Any], pose_frame: str = "camera") -> dict[str, Any]:
    """The left-right mirror image of one training sequence: inputs as the front-end would see the
    horizontally flipped video, labels of the mirrored motion, `mirrored: True`.

    pose_frame: the frame of the sequence's pose labels (`camera`: flip x; `ground`: flip z).
    Keys that only evaluation uses (camera extrinsics, ground pelvis pose) are dropped.
    """
    out: dict[str, Any] = {k: v for k, v in seq.items()
                           if k not in ("extrinsics", "pelvis_position", "pelvis_rotation")}
    out.update(mirror_inputs(out))
    labels = {v: seq[k] for k, v in _LABELS.items() if k in seq}
    mirrored = mirror_outputs(labels, coordinates=seq.get("coordinates", ()), muscles=seq.get("muscles", ()),
                              joints=seq.get("joints", ()), pose_frame=pose_frame)
    out.update({k: np.asarray(mirrored[v], np.float32) for k, v in _LABELS.items() if v in mirrored})
    out["mirrored"] = True
    return out


def augment_sequences(seqs: Sequence[Mapping[str, Any]], augment: Mapping[str, Any] | None,
                      pose_frame: str = "camera") -> list[dict[str, Any]]:
    """The training sequences plus, with `augment.mirror`, their mirror images (originals first)."""
    out = [dict(s) for s in seqs]
    if augment and augment.get("mirror"):
        out += [mirror_sequence(s, pose_frame) for s in seqs]
    return out
