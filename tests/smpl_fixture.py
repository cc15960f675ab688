"""A tiny synthetic SMPL-family body model and AMASS-layout sequences for tests.

Real SMPL files are licence-gated, so tests build a model with the real keys and SMPL's joint
tree but a tiny mesh made from Rajagopal2015 itself: one vertex per joint centre (the joint
regressor picks it), one vertex per skin marker, and heel/toe sole points for the floor, all at
their positions in the generic model's default pose with the arms raised to a T-pose (SMPL's
zero pose), expressed in SMPL's canonical frame (x left, y up, z forward). Each vertex is skinned
rigidly to the SMPL joint that moves its Rajagopal body, so markers computed from this model are
a rigid-segment human that Rajagopal2015 can fit.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import yaml

from biohuman.motion.synth import ModelKinematics
from biohuman.osim.model import FOOT_POINTS_GENERIC, model_info, skin_markers

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
"""SMPL's 24-joint kinematic tree (pelvis, hips, spine1, knees, spine2, ankles, spine3, feet, neck,
collars, head, shoulders, elbows, wrists, hands)."""

BODY_JOINT = {
    "pelvis": 0, "femur_l": 1, "femur_r": 2, "tibia_l": 4, "tibia_r": 5, "talus_l": 7, "talus_r": 8,
    "calcn_l": 7, "calcn_r": 8, "toes_l": 10, "toes_r": 11, "torso": 9, "humerus_l": 16, "humerus_r": 17,
    "ulna_l": 18, "ulna_r": 19, "radius_l": 18, "radius_r": 19, "hand_l": 20, "hand_r": 21,
}
"""Rajagopal2015 body -> the SMPL joint whose rotation moves it."""

T_POSE = {"arm_add_r": -np.pi / 2, "arm_add_l": -np.pi / 2, "pelvis_ty": 0.0}
"""Rajagopal coordinates of the tiny model's template: arms horizontal, pelvis origin at 0."""

OPENSIM_TO_MODEL = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
"""OpenSim (x forward, y up, z right) -> SMPL canonical (x left, y up, z forward)."""


@functools.lru_cache(maxsize=1)
def elbow_axes() -> dict[str, np.ndarray]:
    """Rajagopal2015's elbow-flexion axis of each side at the T-pose template, in SMPL's canonical
    frame (unit vectors): the fixture's elbows flex about it, as the model's elbow does."""
    from scipy.spatial.transform import Rotation

    out = {}
    for side in ("r", "l"):
        pts = [(f"ulna_{side}", p) for p in ((0, 0, 0), (0.1, 0, 0), (0, 0.1, 0), (0, 0, 0.1))]
        kin = ModelKinematics(None, pts)
        q = kin.fill_coupled(kin.default)
        for c, v in T_POSE.items():
            q[kin.index[c]] = v
        frames = []
        for dq in (0.0, 0.1):
            q2 = q.copy()
            q2[kin.index[f"elbow_flex_{side}"]] += dq
            kin.set_all(q2)
            x = kin.outputs()[:-3].reshape(-1, 3)
            frames.append((x[1:] - x[0]).T / 0.1)
        rv = Rotation.from_matrix(frames[1] @ frames[0].T).as_rotvec()
        out[side] = OPENSIM_TO_MODEL @ (rv / np.linalg.norm(rv))
    return out


def _hand_parents(n_joints: int) -> list[int]:
    """SMPL-H (52) / SMPL-X (55) trees: the 22 body joints, [jaw, eyes], then 5 fingers x 3 per hand."""
    parents = SMPL_PARENTS[:22]
    if n_joints == 55:
        parents += [15, 15, 15]
    for wrist in (20, 21):
        for _ in range(5):
            start = len(parents)
            parents += [wrist, start, start + 1]
    return parents


def _rajagopal_points() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[tuple[str, str, np.ndarray]]]:
    """Body origins and skin-marker / sole positions (OpenSim ground, m) at the T-pose template."""
    info = model_info(None)
    names = list(skin_markers(info))
    body_of = dict(zip(info.markers, info.marker_bodies))
    from biohuman.motion.markers import marker_frames

    frames = dict(zip(names, marker_frames(None, names)))
    bodies = ["pelvis", "femur_r", "femur_l", "tibia_r", "tibia_l", "talus_r", "talus_l", "toes_r", "toes_l",
              "torso", "humerus_r", "humerus_l", "ulna_r", "ulna_l", "hand_r", "hand_l"]
    soles = []
    for side in ("r", "l"):
        mirror = np.array([1.0, 1.0, 1.0 if side == "r" else -1.0])
        for key in ("heel", "toe"):
            body, p = FOOT_POINTS_GENERIC[key]
            soles.append((f"sole_{key}_{side}", f"{body}_{side}", np.asarray(p) * mirror))
    pts = [(b, (0.0, 0.0, 0.0)) for b in bodies] + [(frames[n][0], tuple(frames[n][1])) for n in names] + \
          [(b, tuple(p)) for _, b, p in soles]
    kin = ModelKinematics(None, pts)
    q = kin.fill_coupled(kin.default)
    for c, v in T_POSE.items():
        q[kin.index[c]] = v
    kin.set_all(q)
    xyz = kin.outputs()[:-3].reshape(-1, 3)
    origins = dict(zip(bodies, xyz[: len(bodies)]))
    markers = {n: xyz[len(bodies) + i] for i, n in enumerate(names)}
    sole_pts = [(n, b, xyz[len(bodies) + len(names) + i]) for i, (n, b, _) in enumerate(soles)]
    return origins, {n: markers[n] for n in names if body_of[n] in BODY_JOINT}, sole_pts


def _joint_centres(o: dict[str, np.ndarray], n_joints: int) -> np.ndarray:
    """SMPL joint centres (OpenSim ground, m) from Rajagopal body origins."""
    J = np.zeros((n_joints, 3))
    up = np.array([0.0, 1.0, 0.0])
    J[0] = o["pelvis"]
    J[1], J[2] = o["femur_l"], o["femur_r"]
    J[3] = o["torso"]
    J[4], J[5] = o["tibia_l"], o["tibia_r"]
    J[6] = o["torso"] + 0.12 * up
    J[7], J[8] = o["talus_l"], o["talus_r"]
    J[9] = o["torso"] + 0.24 * up
    J[10], J[11] = o["toes_l"], o["toes_r"]
    sh_y = 0.5 * (o["humerus_l"][1] + o["humerus_r"][1])
    J[12] = np.array([o["torso"][0], sh_y + 0.05, 0.0])
    J[13] = 0.5 * (J[12] + o["humerus_l"])
    J[14] = 0.5 * (J[12] + o["humerus_r"])
    J[15] = J[12] + 0.12 * up
    J[16], J[17] = o["humerus_l"], o["humerus_r"]
    J[18], J[19] = o["ulna_l"], o["ulna_r"]
    J[20], J[21] = o["hand_l"], o["hand_r"]
    parents = SMPL_PARENTS if n_joints == 24 else _hand_parents(n_joints)
    for side, hand in (("l", 22), ("r", 23)):  # SMPL's hand joints: 8 cm beyond the wrist
        along = o[f"hand_{side}"] - o[f"ulna_{side}"]
        if n_joints == 24:
            J[hand] = o[f"hand_{side}"] + 0.08 * along / np.linalg.norm(along)
    for j in range(22, n_joints if n_joints > 24 else 22):  # finger / jaw / eye joints: 2 cm apart
        J[j] = J[parents[j]] + np.array([0.0, 0.0, 0.02]) * (1 if j % 2 else -1)
    return J


def build_tiny_body_model(path: str | Path, *, n_joints: int = 24, n_betas: int = 10, gender: str = "neutral",
                          marker_map: str | Path | None = None, pose_blend: float = 0.0) -> dict[str, object]:
    """Write a tiny SMPL-family body model (.npz with the real keys) and, optionally, its marker map.

    n_joints: 24 (SMPL), 52 (SMPL-H) or 55 (SMPL-X) joint layouts. Shape: beta 0 scales the whole
    body by 5 % per unit about the root joint (pelvis origin), beta 1 widens it (x) by 5 % per
    unit; the others are zero. pose_blend: magnitude (m) of random pose blend shapes (default
    none). marker_map: where to write the matching YAML map (vertex ids, zero skin offset since
    the vertices already are Rajagopal marker centres). Returns the vertex ids by name.
    """
    origins, markers, soles = _rajagopal_points()
    J_os = _joint_centres(origins, n_joints)
    parents = SMPL_PARENTS if n_joints == 24 else _hand_parents(n_joints)
    verts, skin, names = list(J_os), list(range(n_joints)), [f"joint_{j}" for j in range(n_joints)]
    info = model_info(None)
    body_of = dict(zip(info.markers, info.marker_bodies))
    for n, p in markers.items():
        verts.append(p)
        skin.append(BODY_JOINT[body_of[n]])
        names.append(n)
    for n, b, p in soles:
        verts.append(p)
        skin.append(BODY_JOINT[b])
        names.append(n)
    V = len(verts)
    v = np.asarray(verts) @ OPENSIM_TO_MODEL.T
    weights = np.zeros((V, n_joints))
    weights[np.arange(V), skin] = 1.0
    # joint vertices follow their own joint; a joint's position is unaffected by its own rotation
    jreg = np.zeros((n_joints, V))
    jreg[np.arange(n_joints), np.arange(n_joints)] = 1.0
    shapedirs = np.zeros((V, 3, n_betas))
    root = v[0]
    shapedirs[:, :, 0] = 0.05 * (v - root)
    if n_betas > 1:
        shapedirs[:, 0, 1] = 0.05 * (v[:, 0] - root[0])
    rng = np.random.default_rng(0)
    posedirs = rng.normal(0.0, pose_blend, (V, 3, 9 * (n_joints - 1))) if pose_blend else np.zeros(
        (V, 3, 9 * (n_joints - 1)))
    faces = np.array([[i, i + 1, i + 2] for i in range(0, V - 2, 3)], dtype=np.int64)
    kintree = np.array([[2**32 - 1] + parents[1:], list(range(n_joints))], dtype=np.int64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, v_template=v, shapedirs=shapedirs, posedirs=posedirs, J_regressor=jreg, weights=weights,
             kintree_table=kintree, f=faces, gender=np.array(gender))
    ids = {n: i for i, n in enumerate(names)}
    if marker_map is not None:
        write_marker_map(marker_map, V, {n: ids[n] for n in markers})
    return ids


def write_marker_map(path: str | Path, n_vertices: int, markers: dict[str, object], offset_m: float = 0.0) -> None:
    """A marker-map YAML with one topology section."""
    Path(path).write_text(yaml.safe_dump({
        "default_offset_m": offset_m,
        "topologies": {"tiny": {"n_vertices": int(n_vertices), "markers": markers}},
    }, sort_keys=False))


def _aa(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


ROOT_Z_UP = _rz(np.pi / 2) @ _rx(np.pi / 2)
"""Root orientation that stands SMPL's canonical body up in a Z-up world, facing +x."""


def walking_poses(n_frames: int, rate: float, n_joints: int = 24, *, cycle_s: float = 1.1,
                  heading_deg: float = 0.0) -> np.ndarray:
    """(T, 3 J) axis-angle poses of a walking-like motion (hip/knee/ankle swing, counter-swinging
    arms lowered from the T-pose, slight pelvis yaw) in SMPL's convention, Z-up root."""
    t = np.arange(n_frames) / rate
    w = 2 * np.pi / cycle_s
    P = np.zeros((n_frames, n_joints, 3))
    for i, ti in enumerate(t):
        yaw = np.radians(heading_deg) + np.radians(3.0) * np.sin(w * ti)
        P[i, 0] = _aa(_rz(yaw) @ ROOT_Z_UP)
        for side, ph in (("l", 0.0), ("r", np.pi)):
            hip, knee, ankle = (1, 4, 7) if side == "l" else (2, 5, 8)
            flex = np.radians(10.0 + 22.0 * np.sin(w * ti + ph))
            kn = np.radians(32.0 - 30.0 * np.cos(w * ti + ph + 0.6))
            an = np.radians(6.0 * np.sin(w * ti + ph - 0.8))
            P[i, hip] = _aa(_rx(-flex))
            P[i, knee] = _aa(_rx(kn))
            P[i, ankle] = _aa(_rx(-an))
            sh = 16 if side == "l" else 17
            sgn = -1.0 if side == "l" else 1.0
            swing = np.radians(-15.0 * np.sin(w * ti + ph))
            P[i, sh] = _aa(_rx(-swing) @ _rz(sgn * np.radians(80.0)))
            el = 18 if side == "l" else 19
            P[i, el] = elbow_axes()[side] * np.radians(20.0 + 10.0 * np.sin(w * ti + ph))
    return P.reshape(n_frames, -1)


def build_amass_sequence(path: str | Path, n_frames: int = 120, rate: float = 120.0, *, n_joints: int = 24,
                         betas: np.ndarray | None = None, gender: str = "neutral", speed: float = 1.2,
                         pelvis_height: float = 0.94, layout: str | None = None) -> Path:
    """Write an AMASS-layout .npz of a walking-like motion along +x in a Z-up world.

    n_joints picks the pose width (24 -> 72, 52 -> 156, 55 -> 165). layout 'smplx' writes
    SMPL-X keys (`mocap_frame_rate`, `root_orient`, `pose_body`, `pose_hand`, ...); otherwise
    SMPL-H's (`poses`, `mocap_framerate`).
    """
    poses = walking_poses(n_frames, rate, n_joints)
    t = np.arange(n_frames) / rate
    trans = np.stack([speed * t, np.zeros_like(t), pelvis_height + 0.01 * np.cos(4 * np.pi * t / 1.1)], axis=1)
    b = np.zeros(16) if betas is None else np.asarray(betas, dtype=float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "smplx":
        np.savez(path, poses=poses, trans=trans, betas=b, gender=np.array(gender), mocap_frame_rate=np.array(rate),
                 root_orient=poses[:, :3], pose_body=poses[:, 3:66], surface_model_type=np.array("smplx"))
    else:
        np.savez(path, poses=poses, trans=trans, betas=b, gender=np.array(gender), mocap_framerate=np.array(rate))
    return path
