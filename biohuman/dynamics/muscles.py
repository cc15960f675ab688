"""Muscle-geometry surrogate: smooth polynomial approximations of OpenSim muscle-tendon lengths
and moment arms, fitted once per scaled model and evaluated in batch (numpy or torch).

Method (after OpenCap's polynomial muscle geometry, Uhlrich et al. 2023):
1. Spanned coordinates per muscle: the unlocked, independent coordinates of the joints between
   the bodies its path touches, kept if OpenSim's `computeMomentArm` is nonzero (> 0.1 mm) at
   one of a few poses. Coupled coordinates (Rajagopal's `knee_angle_*_beta`) follow their
   coupler and are folded into the independent one (`computeMomentArm` accounts for couplers).
   With `moment_arms="opensim"` the coordinates of the joints above those bodies (up to, not
   including, the root joint) are candidates too: a path wrapped over two surfaces on different
   bodies does not apply its tension as collinear pairs, so OpenSim gives it moment arms about
   joints it does not cross. Rajagopal's gastrocnemii (femur -> tibia cylinder -> femur condyle
   cylinder -> calcaneus) have 0.1-0.3 mm about the hip and the pelvis, which OpenSim's SO
   balances (at 1.2 kN, 0.35 N m of hip moment); -dL/dq there is 0. The root joint's (pelvis)
   coordinates stay out: their residual actuators are cheap and take the difference.
2. Poses are sampled uniformly in the box of coordinate ranges the caller gives (the subject's
   trials plus a margin), all spanned coordinates at once; OpenSim evaluates every muscle's
   length and its moment arms there.
3. Per muscle a polynomial of total degree <= `max_degree` (default 5) in its <= 5 spanned
   coordinates (scaled to [-1, 1] over the box) is fitted by least squares. Degrees from 3 up
   are tried; the one with the lowest held-out moment-arm RMSE is kept (the search stops early
   once the RMSE is below `tolerance_m`, default 0.1 mm).
4. Moment-arm definition (`moment_arms`, recorded in `metadata`):
   * "opensim" (default): moment arms are fitted directly to OpenSim's `computeMomentArm`,
     the generalized force of a unit tension, which is what OpenSim's Static Optimization
     applies. For wrapping muscles it can differ from -dL/dq (measured on Rajagopal's
     gaslat_r at the knee: 26 mm vs 13 mm).
   * "dLdq": moment arms are -dL/dq of the fitted length polynomial (lengths fitted jointly to
     values and finite-difference gradients), the virtual-work definition.
   Lengthening speed is -(moment arms) . qdot with the chosen definition. OpenSim's own path
   speed (GeometryPath lengthening speed, what SO's force-velocity factor uses) follows
   computeMomentArm, not dL/dq: gaslat_r at knee 0.1 / ankle 0.1 rad with qdot = (1, 2) rad/s:
   path 0.078 m/s, -r.qdot 0.077 m/s, dL/dq.qdot 0.090 m/s. Using dL/dq for the speed doubled
   the largest activation error against OpenSim SO on the walking trial (0.046 vs 0.014).
5. `metadata` reports held-out errors against OpenSim (lengths and moment arms, mm), the fit
   time and every setting; `outside_box` flags frames that leave the sampled box
   (extrapolation).

Caching: `fit_muscle_surrogate(..., cache=True)` stores the fit as
`<model dir>/<model stem>.muscle_surrogate.<key>.npz` (atomic write), key = sha256 of the model
file's bytes, the coordinate box and the settings; a later call with the same inputs loads it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biohuman.dynamics.kinematics import coordinate_name
from biohuman.errors import ConfigError, InputFormatError
from biohuman.io.atomic import atomic_path
from biohuman.osim.model import load_model, opensim, opensim_version, single_couplers

MOMENT_ARM_MODES = ("opensim", "dLdq")
SURROGATE_VERSION = 5  # 2: higher degrees for muscles spanning 1-3 coordinates; 3: weighted fit, visited poses, hinges; 4: off-chain coordinates (opensim moment arms); 5: hinged off-chain fits
"""Bumped when the fitting procedure changes (invalidates caches)."""

HINGE_KNOTS = np.linspace(-0.8, 0.8, 9)
"""Candidate hinge knots, in the scaled coordinate x in [-1, 1] (`fit_muscle_surrogate(hinges=True)`)."""
HINGE_MIN_RANGE_RAD = 1.0
"""Coordinates whose box is narrower than this (rad) get no hinge."""
HINGE_MIN_GAIN = 0.2
"""A hinge is kept only if it lowers the held-out moment-arm error by this fraction."""

_SPAN_TOL_M = 1e-4
_FD_STEP = 1e-5


# --------------------------------------------------------------------------------------------
# polynomial basis


def monomial_exponents(n_vars: int, degree: int) -> np.ndarray:
    """All exponent tuples of total degree <= `degree` in `n_vars` variables, (n_mono, n_vars)."""
    rows = [e for d in range(degree + 1) for e in itertools.product(range(d + 1), repeat=n_vars) if sum(e) == d]
    return np.array(rows, dtype=np.int64).reshape(-1, n_vars)


def _powers(x, degree: int, xp):  # noqa: ANN001, ANN202 - numpy or torch arrays
    """x (N, k) -> powers (N, k, degree + 1) with powers[..., p] = x**p."""
    cols = [xp.ones_like(x)]
    for _ in range(degree):
        cols.append(cols[-1] * x)
    return xp.stack(cols, -1)


def _basis(x, exps: np.ndarray, xp, grad: bool = False):  # noqa: ANN001, ANN202
    """Monomials Phi (N, n_mono) of x (N, k) and, with grad, dPhi/dx (N, k, n_mono)."""
    n, k = x.shape
    deg = int(exps.max()) if exps.size else 0
    pw = _powers(x, max(deg, 1), xp)  # (N, k, d+1)
    if xp is np:
        terms = np.stack([pw[:, j, exps[:, j]] for j in range(k)], 1)  # (N, k, n_mono)
        phi = terms.prod(1)
    else:
        import torch

        idx = torch.as_tensor(exps.T, device=x.device)  # (k, n_mono)
        terms = torch.gather(pw, 2, idx.unsqueeze(0).expand(n, -1, -1))
        phi = terms.prod(1)
    if not grad:
        return phi, None
    dterms = []
    for j in range(k):
        e = exps[:, j]
        low = np.maximum(e - 1, 0)
        if xp is np:
            d = pw[:, j, low] * e[None, :]
            others = np.prod(np.delete(terms, j, axis=1), axis=1) if k > 1 else np.ones_like(d)
        else:
            import torch

            et = torch.as_tensor(e, dtype=x.dtype, device=x.device)
            d = pw[:, j, torch.as_tensor(low, device=x.device)] * et
            keep = [i for i in range(k) if i != j]
            others = terms[:, keep].prod(1) if keep else torch.ones_like(d)
        dterms.append(d * others)
    return phi, xp.stack(dterms, 1)


def hinge_exponents(n_vars: int, degree: int, n_hinges: int, hinge_power: int = 3, hinge_degree: int = 2) -> np.ndarray:
    """Exponents over (x, h_1..h_n): every monomial of x of total degree <= `degree`, plus
    h_i^p times every monomial of x of degree <= `hinge_degree`, p = 1..`hinge_power` (one hinge
    per term). (n_mono, n_vars + n_hinges)."""
    base = monomial_exponents(n_vars, degree)
    rows = [np.hstack([base, np.zeros((len(base), n_hinges), np.int64)])]
    low = monomial_exponents(n_vars, hinge_degree)
    for i in range(n_hinges):
        for p in range(1, hinge_power + 1):
            h = np.zeros((len(low), n_hinges), np.int64)
            h[:, i] = p
            rows.append(np.hstack([low, h]))
    return np.vstack(rows)


def _hinge_basis(x, exps: np.ndarray, hinges: np.ndarray | None, xp, grad: bool = False):  # noqa: ANN001, ANN202
    """`_basis` over x augmented with hinge variables h_i = max(0, x[:, j_i] - t_i) for the rows
    (j_i, t_i) of `hinges` (None: plain monomials); the gradient is with respect to x (the chain
    rule through each hinge's unit step)."""
    if hinges is None or len(hinges) == 0:
        return _basis(x, exps, xp, grad=grad)
    k = x.shape[1]
    js = [int(j) for j in hinges[:, 0]]
    parts, steps = [x], []
    for j, t in zip(js, hinges[:, 1]):
        d = x[:, j:j + 1] - float(t)
        if xp is np:
            parts.append(np.maximum(d, 0.0))
            steps.append((d > 0).astype(x.dtype))
        else:
            parts.append(d.clamp(min=0.0))
            steps.append((d > 0).to(x.dtype))
    z = xp.concatenate(parts, 1) if xp is np else xp.cat(parts, 1)
    phi, dz = _basis(z, exps, xp, grad=grad)
    if not grad:
        return phi, None
    cols = []
    for j in range(k):
        c = dz[:, j]
        for i, ji in enumerate(js):
            if ji == j:
                c = c + dz[:, k + i] * steps[i]
        cols.append(c)
    return phi, xp.stack(cols, 1)


# --------------------------------------------------------------------------------------------
# surrogate


@dataclass
class MuscleFit:
    """Polynomial fit of one muscle (see module docstring). Coordinates are scaled as
    x = (q - center) / half over the surrogate's box; coefficients act on monomials of x."""

    coordinates: tuple[str, ...]
    degree: int
    exponents: np.ndarray  # (n_mono, k)
    length_coef: np.ndarray  # (n_mono,) m
    moment_arm_coef: np.ndarray | None  # (n_mono, k) m, only for moment_arms="opensim"
    hinges: np.ndarray | None = None  # (n, 2): local coordinate index, knot in scaled x; see `hinge_exponents`
    off_chain: tuple[str, ...] = ()  # coordinates off the path's tree chain with OpenSim moment arms (docstring, item 1)
    off_exponents: np.ndarray | None = None  # (n_off, k + k_off + 1): monomials in coordinates + off_chain, hinge power
    off_arm_coef: np.ndarray | None = None  # (n_off, k_off) m: their moment arms
    off_hinge: np.ndarray | None = None  # (3,): local coordinate index, knot in scaled x, side (+1: x > knot)

    def __post_init__(self) -> None:
        """No hinges is always None (never an empty array), so callers test `hinges is None`."""
        self.hinges = None if self.hinges is None or len(self.hinges) == 0 else np.asarray(self.hinges, float)


@dataclass
class MuscleSurrogate:
    """Per-model muscle geometry surrogate.

    coordinates: the spanned coordinates of all muscles (input order of `evaluate`); lower /
    upper (K,): the sampled box (rad / m); muscles: muscle names (output order); fits: per
    muscle; moment_arms: "opensim" | "dLdq"; metadata: settings, held-out errors (mm), timing,
    model hash, OpenSim version.
    """

    model_path: str
    coordinates: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    muscles: tuple[str, ...]
    fits: dict[str, MuscleFit]
    moment_arms: str
    metadata: dict = field(default_factory=dict)

    @property
    def spans(self) -> dict[str, tuple[str, ...]]:
        """Muscle -> spanned coordinates (its tree chain's, then the off-chain ones)."""
        return {m: f.coordinates + f.off_chain for m, f in self.fits.items()}

    @property
    def off_chain(self) -> dict[str, tuple[str, ...]]:
        """Muscle -> coordinates off its path's tree chain that it has (OpenSim) moment arms about."""
        return {m: f.off_chain for m, f in self.fits.items() if f.off_chain}

    # ---- evaluation -------------------------------------------------------------------
    def coordinate_matrix(self, coordinates: pd.DataFrame) -> np.ndarray:
        """(T, K) values of `self.coordinates` from a coordinates frame (names or state paths)."""
        cols = {coordinate_name(str(c)): c for c in coordinates.columns}
        missing = [c for c in self.coordinates if c not in cols]
        if missing:
            raise InputFormatError(f"coordinates frame lacks coordinates the muscle surrogate needs: {missing}")
        return np.column_stack([np.asarray(coordinates[cols[c]], dtype=float) for c in self.coordinates]) \
            if self.coordinates else np.zeros((len(coordinates), 0))

    def evaluate(self, q, qd=None, *, dldq: bool = True):  # noqa: ANN001, ANN201 - numpy or torch
        """Lengths, lengthening speeds and moment arms at poses q (T, K) in `self.coordinates`.

        Accepts numpy arrays or torch tensors (then computes in torch, differentiable).
        Returns dict: "length" (T, M) m, "moment_arm" (T, M, K) m (zero where a muscle does not
        span a coordinate; definition per `self.moment_arms`), "dldq" (T, M, K) m/rad (only with
        dldq=True: the basis gradient is ~85 % of the cost where moment arms are fitted
        directly), and with qd (T, K): "speed" (T, M) m/s lengthening speed = -moment_arm . qd
        (see module docstring).
        """
        is_torch = not isinstance(q, np.ndarray)
        if is_torch:
            import torch

            xp = torch
            kw = {"dtype": q.dtype, "device": q.device}
            center = torch.as_tensor(0.5 * (self.lower + self.upper), **kw)
            half = torch.as_tensor(0.5 * (self.upper - self.lower), **kw)
        else:
            xp = np
            q = np.asarray(q, dtype=float)
            center, half = 0.5 * (self.lower + self.upper), 0.5 * (self.upper - self.lower)
        x = (q - center) / half
        n, k_all = q.shape
        m_all = len(self.muscles)
        def zeros(*shape: int):  # noqa: ANN202 - numpy or torch, like q
            return torch.zeros(shape, **kw) if is_torch else np.zeros(shape)

        length, arms = zeros(n, m_all), zeros(n, m_all, k_all)
        grads = zeros(n, m_all, k_all) if dldq else None  # not even allocated on the solver's path
        for grp in self._groups():
            cols, mi = grp["cols"], grp["muscles"]
            need_grad = dldq or grp["arm"] is None
            phi, dphi = _hinge_basis(x[:, cols], grp["exponents"], grp["hinges"], xp, grad=need_grad)  # (T, n), (T, k, n)
            lc = _as(grp["length"], q, xp)  # (n_mono, g)
            length[:, mi] = phi @ lc
            if need_grad:
                grad = (dphi @ lc) / half[cols][None, :, None]  # (T, k, g)
                grad = grad.permute(0, 2, 1) if is_torch else grad.transpose(0, 2, 1)  # (T, g, k)
                if grads is not None:
                    grads[:, mi[:, None], cols[None, :]] = grad
            if grp["arm"] is not None:
                arm = (phi @ _as(grp["arm"], q, xp)).reshape(n, len(mi), len(cols))
                arms[:, mi[:, None], cols[None, :]] = arm
            else:
                arms[:, mi[:, None], cols[None, :]] = -grad
        index = {c: i for i, c in enumerate(self.coordinates)}
        for i, m in enumerate(self.muscles):  # off-chain moment arms (a few gastrocnemii); -dL/dq there is 0
            f = self.fits[m]
            if not f.off_chain:
                continue
            cols = np.array([index[c] for c in f.coordinates + f.off_chain], dtype=np.int64)
            phi = _off_chain_basis(x[:, cols], f.off_exponents, f.off_hinge, xp)
            arms[:, i, cols[len(f.coordinates):]] = phi @ _as(f.off_arm_coef, q, xp)
        out = {"length": length, "moment_arm": arms} | ({"dldq": grads} if grads is not None else {})
        if qd is not None:
            qd = qd if is_torch else np.asarray(qd, dtype=float)
            out["speed"] = -(arms * qd[:, None, :]).sum(-1)
        return out

    def _groups(self) -> list[dict]:
        """Muscles sharing coordinates and polynomial degree, evaluated together (cached)."""
        cached = getattr(self, "_group_cache", None)
        if cached is not None:
            return cached
        index = {c: i for i, c in enumerate(self.coordinates)}
        by_key: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.muscles):
            f = self.fits[m]
            hinge_key = None if f.hinges is None else f.hinges.tobytes()
            by_key.setdefault((f.coordinates, f.exponents.tobytes(), hinge_key, f.moment_arm_coef is None),
                              []).append(i)
        groups = []
        for (coords, _, _, no_arm), members in by_key.items():
            fits = [self.fits[self.muscles[i]] for i in members]
            groups.append({
                "cols": np.array([index[c] for c in coords], dtype=np.int64),
                "muscles": np.array(members, dtype=np.int64),
                "exponents": fits[0].exponents,
                "hinges": fits[0].hinges,
                "length": np.stack([f.length_coef for f in fits], 1),
                "arm": None if no_arm else np.concatenate([f.moment_arm_coef for f in fits], 1),
            })
        self._group_cache = groups
        return groups

    def outside_box(self, coordinates: pd.DataFrame | np.ndarray, tol: float = 1e-9) -> pd.DataFrame | np.ndarray:
        """Extrapolation flags: True where a frame leaves the sampled box.

        DataFrame in -> DataFrame (T x `self.coordinates`, bool) with an "any" column; array
        (T, K) in -> bool array (T, K).
        """
        if isinstance(coordinates, pd.DataFrame):
            q = self.coordinate_matrix(coordinates)
            flags = (q < self.lower - tol) | (q > self.upper + tol)
            df = pd.DataFrame(flags, index=coordinates.index, columns=list(self.coordinates))
            df["any"] = flags.any(axis=1)
            return df
        q = np.asarray(coordinates, dtype=float)
        return (q < self.lower - tol) | (q > self.upper + tol)

    # ---- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the surrogate as an .npz (atomic)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"lower": self.lower, "upper": self.upper}
        header = {"model_path": self.model_path, "coordinates": list(self.coordinates), "muscles": list(self.muscles),
                  "moment_arms": self.moment_arms, "metadata": self.metadata,
                  "fits": {m: {"coordinates": list(f.coordinates), "degree": f.degree, "off_chain": list(f.off_chain)}
                           for m, f in self.fits.items()}}
        for i, m in enumerate(self.muscles):
            f = self.fits[m]
            arrays[f"exp_{i}"] = f.exponents
            arrays[f"len_{i}"] = f.length_coef
            if f.moment_arm_coef is not None:
                arrays[f"ma_{i}"] = f.moment_arm_coef
            if f.hinges is not None:
                arrays[f"hinge_{i}"] = f.hinges
            if f.off_chain:
                arrays[f"offexp_{i}"] = f.off_exponents
                arrays[f"offma_{i}"] = f.off_arm_coef
                if f.off_hinge is not None:
                    arrays[f"offhinge_{i}"] = f.off_hinge
        arrays["header"] = np.frombuffer(json.dumps(header, default=_json_default).encode(), dtype=np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> MuscleSurrogate:
        """Read a surrogate written by `save`; InputFormatError naming the file if unreadable."""
        path = Path(path)
        try:
            with np.load(path) as z:
                header = json.loads(bytes(z["header"]).decode())
                fits = {}
                for i, m in enumerate(header["muscles"]):
                    h = header["fits"][m]
                    fits[m] = MuscleFit(coordinates=tuple(h["coordinates"]), degree=int(h["degree"]),
                                        exponents=z[f"exp_{i}"], length_coef=z[f"len_{i}"],
                                        moment_arm_coef=z[f"ma_{i}"] if f"ma_{i}" in z else None,
                                        hinges=z[f"hinge_{i}"] if f"hinge_{i}" in z else None,
                                        off_chain=tuple(h.get("off_chain", ())),
                                        off_exponents=z[f"offexp_{i}"] if f"offexp_{i}" in z else None,
                                        off_arm_coef=z[f"offma_{i}"] if f"offma_{i}" in z else None,
                                        off_hinge=z[f"offhinge_{i}"] if f"offhinge_{i}" in z else None)
                return cls(model_path=header["model_path"], coordinates=tuple(header["coordinates"]),
                           lower=z["lower"], upper=z["upper"], muscles=tuple(header["muscles"]), fits=fits,
                           moment_arms=header["moment_arms"], metadata=header["metadata"])
        except (OSError, KeyError, ValueError) as exc:
            raise InputFormatError(f"not a readable muscle surrogate: {exc}", path) from exc


def _as(a: np.ndarray, like, xp):  # noqa: ANN001, ANN202
    if xp is np:
        return a
    import torch

    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


def _json_default(o):  # noqa: ANN001, ANN202
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


# --------------------------------------------------------------------------------------------
# fitting


def _is_translation(name: str) -> bool:
    """Translational coordinates, recognised by name (`*_tx`, `*_ty`, `*_tz`)."""
    return name.endswith(("_tx", "_ty", "_tz"))


def coordinate_ranges(coordinates: pd.DataFrame | Iterable[pd.DataFrame], margin_rad: float = np.deg2rad(5.0),
                      margin_m: float = 0.02) -> dict[str, tuple[float, float]]:
    """Union of the coordinate ranges of one or more trials (rad / m), widened by a margin.

    Translational coordinates are recognised by name (`*_tx`, `*_ty`, `*_tz`) and get margin_m.
    """
    frames = [coordinates] if isinstance(coordinates, pd.DataFrame) else list(coordinates)
    out: dict[str, tuple[float, float]] = {}
    for df in frames:
        for col in df.columns:
            name = coordinate_name(str(col))
            if name is None:
                continue
            v = np.asarray(df[col], dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            lo, hi = float(v.min()), float(v.max())
            if name in out:
                lo, hi = min(lo, out[name][0]), max(hi, out[name][1])
            out[name] = (lo, hi)
    res = {}
    for name, (lo, hi) in out.items():
        pad = margin_m if _is_translation(name) else margin_rad
        res[name] = (lo - pad, hi + pad)
    return res


def _parent_joints(model) -> dict:  # noqa: ANN001
    """Body name -> the joint whose child it is (the tree's parent links)."""
    js = model.getJointSet()
    return {js.get(i).getChildFrame().findBaseFrame().getName(): js.get(i) for i in range(js.getSize())}


def _joint_coordinates(joint) -> list[str]:  # noqa: ANN001
    """Names of a joint's coordinates."""
    return [joint.get_coordinates(k).getName() for k in range(joint.numCoordinates())]


def _chain_coordinates(model, body_a: str, body_b: str) -> list[str]:  # noqa: ANN001
    """Coordinates of the joints on the tree path between two bodies."""
    parent_joint = _parent_joints(model)

    def ancestry(body: str) -> list[str]:
        chain = [body]
        while chain[-1] in parent_joint:
            chain.append(parent_joint[chain[-1]].getParentFrame().findBaseFrame().getName())
        return chain

    a, b = ancestry(body_a), ancestry(body_b)
    common = next(x for x in a if x in b)
    coords = []
    for chain in (a, b):
        for body in chain[: chain.index(common)]:
            coords += _joint_coordinates(parent_joint[body])
    return coords


def _ancestor_coordinates(model, body: str) -> list[str]:  # noqa: ANN001
    """Coordinates of the joints from `body` up the tree, the root joint (child of ground) excluded."""
    parent_joint = _parent_joints(model)
    ground = model.getGround().getName()
    coords: list[str] = []
    while body in parent_joint:
        j = parent_joint[body]
        body = j.getParentFrame().findBaseFrame().getName()
        if body == ground:
            break
        coords += _joint_coordinates(j)
    return coords


def _muscle_bodies(muscle) -> list[str]:  # noqa: ANN001
    """Bodies touched by a muscle's path points and wrap objects."""
    osim = opensim()
    path = osim.GeometryPath.safeDownCast(muscle.getPath()) if hasattr(muscle, "getPath") else muscle.getGeometryPath()
    if path is None:
        raise ConfigError(f"muscle {muscle.getName()} has no GeometryPath (function-based paths are not supported)")
    pps = path.getPathPointSet()
    bodies = [pps.get(i).getParentFrame().findBaseFrame().getName() for i in range(pps.getSize())]
    return list(dict.fromkeys(bodies))


def _independent_free(model) -> tuple[list[str], dict[str, tuple[str, object]]]:  # noqa: ANN001
    """(unlocked coordinates that no coupler drives, {dependent: (independent, function)})."""
    cs = model.getCoordinateSet()
    deps = single_couplers(model)
    free = [cs.get(i).getName() for i in range(cs.getSize())
            if not cs.get(i).get_locked() and cs.get(i).getName() not in deps]
    return free, deps


class _Poser:
    """Sets model poses fast: independent coordinates by value, coupled ones through their
    coupler function, then realizes positions."""

    def __init__(self, model) -> None:  # noqa: ANN001
        self.osim = opensim()
        self.model = model
        self.state = model.initSystem()
        self.cs = model.getCoordinateSet()
        _, self.deps = _independent_free(model)
        self.vec = self.osim.Vector(1, 0.0)
        self.coord = {self.cs.get(i).getName(): self.cs.get(i) for i in range(self.cs.getSize())}

    def set(self, values: Mapping[str, float]) -> None:
        for name, v in values.items():
            self.coord[name].setValue(self.state, float(v), False)
        for dep, (ind, fn) in self.deps.items():
            self.vec.set(0, self.coord[ind].getValue(self.state))
            self.coord[dep].setValue(self.state, fn.calcValue(self.vec), False)
        self.model.realizePosition(self.state)


def span_candidates(model, muscle: str, *, off_chain: bool = False) -> list[str]:  # noqa: ANN001
    """Independent free coordinates a muscle may have moment arms about: those of the joints on
    the tree paths between the bodies its path points touch, then (off_chain) those of the joints
    above them, the root joint excluded (module docstring, item 1)."""
    free, deps = _independent_free(model)
    bodies = _muscle_bodies(model.getMuscles().get(muscle))
    coords: list[str] = []
    for a, b in itertools.combinations(bodies, 2):
        coords += _chain_coordinates(model, a, b)
    if off_chain:
        for body in bodies:
            coords += _ancestor_coordinates(model, body)
    coords = [deps[c][0] if c in deps else c for c in coords]
    return [c for c in dict.fromkeys(coords) if c in free]


def find_spanned_coordinates(model, muscles: Sequence[str], box: Mapping[str, tuple[float, float]], *,
                             n_poses: int = 6, seed: int = 0,
                             off_chain: bool = False) -> dict[str, tuple[str, ...]]:  # noqa: ANN001
    """Muscle -> spanned coordinates: tree-path candidates kept where |computeMomentArm| > 0.1 mm
    at one of `n_poses` poses in the box (the first pose is the box centre), tree-path ones first.
    off_chain: the coordinates of the joints above the path's bodies (root joint excluded) are
    candidates as well (module docstring, item 1), tested at >= 40 poses: their moment arms are
    nonzero only in part of the box (the gastrocnemii's near knee extension, where both of their
    wrap surfaces engage), which 6 poses can miss (~0.5 s for Rajagopal's 80 muscles)."""
    if off_chain:
        n_poses = max(n_poses, 40)
    poser = _Poser(model)
    rng = np.random.default_rng(seed)
    ms = model.getMuscles()
    cand = {m: span_candidates(model, m, off_chain=off_chain) for m in muscles}
    needed = sorted({c for cs_ in cand.values() for c in cs_})
    lo = np.array([box.get(c, (np.nan, np.nan))[0] for c in needed])
    hi = np.array([box.get(c, (np.nan, np.nan))[1] for c in needed])
    default = np.array([poser.coord[c].getDefaultValue() for c in needed])
    lo = np.where(np.isfinite(lo), lo, default - 0.2)
    hi = np.where(np.isfinite(hi), hi, default + 0.2)
    poses = [0.5 * (lo + hi)] + [rng.uniform(lo, hi) for _ in range(max(n_poses - 1, 0))]
    found: dict[str, set[str]] = {m: set() for m in muscles}
    for pose in poses:
        poser.set(dict(zip(needed, pose)))
        for m in muscles:
            mus = ms.get(m)
            for c in cand[m]:
                if c in found[m]:
                    continue
                if abs(mus.computeMomentArm(poser.state, poser.coord[c])) > _SPAN_TOL_M:
                    found[m].add(c)
    return {m: tuple(c for c in cand[m] if c in found[m]) for m in muscles}


def sample_muscle_geometry(model, muscles: Sequence[str], spans: Mapping[str, Sequence[str]],
                           lower: np.ndarray, upper: np.ndarray, coordinates: Sequence[str], n_samples: int, *,
                           moment_arms: str, seed: int = 0, q: np.ndarray | None = None) -> dict[str, np.ndarray]:  # noqa: ANN001
    """OpenSim samples at uniform random poses in the box (or at the given poses q (N, K), then
    n_samples is ignored): "q" (N, K), "length" (N, M) m, and per muscle "ma_<i>" (N, k_i)
    computeMomentArm ("opensim") or "grad_<i>" (N, k_i) dL/dq by central differences ("dLdq")."""
    rng = np.random.default_rng(seed)
    poser = _Poser(model)
    ms = model.getMuscles()
    mus_objs = [ms.get(m) for m in muscles]
    if q is None:
        q = rng.uniform(lower, upper, size=(n_samples, len(coordinates)))
    q = np.asarray(q, dtype=float)
    n_samples = len(q)
    lengths = np.empty((n_samples, len(muscles)))
    extra = {i: np.empty((n_samples, len(spans[m]))) for i, m in enumerate(muscles)}
    coord_objs = poser.coord
    for n in range(n_samples):
        pose = dict(zip(coordinates, q[n]))
        poser.set(pose)
        lengths[n] = [mo.getLength(poser.state) for mo in mus_objs]
        if moment_arms == "opensim":
            for i, (m, mo) in enumerate(zip(muscles, mus_objs)):
                extra[i][n] = [mo.computeMomentArm(poser.state, coord_objs[c]) for c in spans[m]]
        else:
            needed = sorted({c for m in muscles for c in spans[m]})
            grads = {}
            for c in needed:
                v0 = pose[c]
                poser.set({c: v0 + _FD_STEP})
                lp = np.array([mo.getLength(poser.state) for mo in mus_objs])
                poser.set({c: v0 - _FD_STEP})
                lm = np.array([mo.getLength(poser.state) for mo in mus_objs])
                poser.set({c: v0})
                grads[c] = (lp - lm) / (2 * _FD_STEP)
            for i, m in enumerate(muscles):
                extra[i][n] = [grads[c][i] for c in spans[m]]
    out = {"q": q, "length": lengths}
    key = "ma" if moment_arms == "opensim" else "grad"
    for i in extra:
        out[f"{key}_{i}"] = extra[i]
    return out


def _lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares by the normal equations (Cholesky, after scaling the columns to unit norm),
    falling back to SVD (`np.linalg.lstsq`) if they are not numerically positive definite: 5-10x
    faster than SVD on the surrogate's well-conditioned monomials of x in [-1, 1]."""
    import scipy.linalg

    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    an = a / scale
    try:
        cf = scipy.linalg.cho_factor(an.T @ an, check_finite=False)
        d = np.abs(np.diag(cf[0]))
        if d.min() > 1e-6 * d.max():  # rough condition of the normal matrix below ~1e12
            sol = scipy.linalg.cho_solve(cf, an.T @ b, check_finite=False)
            if np.all(np.isfinite(sol)):
                return sol / (scale[:, None] if sol.ndim == 2 else scale)
    except np.linalg.LinAlgError:
        pass
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol


def _fit_one(x: np.ndarray, length: np.ndarray, target: np.ndarray, half: np.ndarray, train: np.ndarray,
             tests: Mapping[str, np.ndarray], degree: int, moment_arms: str, grad_weight: float,
             weight: np.ndarray | None = None, hinges: np.ndarray | None = None) -> tuple[MuscleFit, dict]:
    """Weighted least-squares fit of one muscle at one degree on the `train` rows (row weights
    `weight`, default 1), with hinge terms at `hinges` ((n, 2): local coordinate, knot; see
    `hinge_exponents`); returns (fit without names, {test set name: errors in m})."""
    k = x.shape[1]
    exps = monomial_exponents(k, degree) if hinges is None else hinge_exponents(k, degree, len(hinges))
    phi, dphi = _hinge_basis(x, exps, hinges, np, grad=True)  # dphi (N, k, n_mono), wrt scaled x
    sw = np.ones(len(train)) if weight is None else np.sqrt(weight[train])
    if moment_arms == "opensim":
        a = phi[train] * sw[:, None]
        coef = _lstsq(a, np.column_stack([length[train] * sw, target[train] * sw[:, None]]))
        lc, mc = coef[:, 0], coef[:, 1:]
    else:
        # joint fit of values and gradients (dL/dq = dPhi/dx / half . c)
        rows = [phi[train] * sw[:, None]] + [grad_weight * dphi[train][:, j] * sw[:, None] / half[j] for j in range(k)]
        rhs = [length[train] * sw] + [grad_weight * target[train][:, j] * sw for j in range(k)]
        lc = _lstsq(np.vstack(rows), np.concatenate(rhs))
        mc = None
    errors = {}
    for name, test in tests.items():
        if len(test) == 0:
            continue
        ma_pred = phi[test] @ mc if mc is not None else -(np.einsum("nkm,m->nk", dphi[test], lc) / half)
        ma_true = target[test] if moment_arms == "opensim" else -target[test]
        errors[name] = {
            "length_rmse": float(np.sqrt(np.mean((phi[test] @ lc - length[test]) ** 2))),
            "length_max": float(np.max(np.abs(phi[test] @ lc - length[test]))),
            "moment_arm_rmse": float(np.sqrt(np.mean((ma_pred - ma_true) ** 2))) if k else 0.0,
            "moment_arm_max": float(np.max(np.abs(ma_pred - ma_true))) if k else 0.0,
        }
    return MuscleFit(coordinates=(), degree=degree, exponents=exps, length_coef=lc, moment_arm_coef=mc,
                     hinges=hinges), errors


OFF_CHAIN_DEGREE = 3
"""Total degree of the plain off-chain moment-arm polynomial (module docstring, item 1)."""
OFF_CHAIN_HINGE_DEGREE = 2
"""Degree of the monomials that multiply the hinge powers 1-3 in a hinged off-chain fit."""


def _off_chain_basis(x, exps: np.ndarray, hinge: np.ndarray | None, xp):  # noqa: ANN001, ANN202
    """Off-chain basis (N, n): monomials exps[:, :-1] of x (N, k + k_off), each times h^exps[:, -1]
    with h = max(0, side (x_j - knot)) for hinge = (j, knot, side); no hinge: the monomials alone."""
    phi, _ = _basis(x, exps[:, :-1], xp)
    if hinge is None:
        return phi
    j, knot, side = int(hinge[0]), float(hinge[1]), float(hinge[2])
    h = side * (x[:, j] - knot)
    h = h.clamp(min=0.0) if xp is not np else np.maximum(h, 0.0)
    return phi * h[:, None] ** _as(exps[:, -1].astype(float), x, xp)[None, :]


def _fit_off_chain(x: np.ndarray, target: np.ndarray, n_own: int, train: np.ndarray,
                   tests: Mapping[str, np.ndarray], weight: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Off-chain moment arms target (N, k_off) as functions of x (N, k + k_off: the muscle's own
    coordinates, then the off-chain ones), by weighted least squares on `train`.

    Candidates: a plain degree-`OFF_CHAIN_DEGREE` polynomial, and hinged fits h, h^2, h^3 times
    the monomials of degree <= `OFF_CHAIN_HINGE_DEGREE`, with h = max(0, +-(x_j - t)) on each own
    coordinate j and knot t of `HINGE_KNOTS`: the gastrocnemii's arms are exactly 0 once the knee
    flexes past ~0.5 rad (the condyle wrap lets go), and a polynomial ripples there by 0.03-0.08
    mm, which on a run's saturated frames moves activations by up to 0.6. The lowest held-out RMSE
    wins. Returns (exponents with the hinge power last, coefficients, hinge (j, t, side) or None,
    {test set: {"off_chain_rmse", "off_chain_max"} in m})."""
    sw = np.ones(len(train)) if weight is None else np.sqrt(weight[train])
    plain = monomial_exponents(x.shape[1], OFF_CHAIN_DEGREE)
    mono = monomial_exponents(x.shape[1], OFF_CHAIN_HINGE_DEGREE)
    hinged = np.vstack([np.column_stack([mono, np.full(len(mono), p)]) for p in (1, 2, 3)])
    cands = [(np.column_stack([plain, np.zeros(len(plain), dtype=plain.dtype)]), None)]
    cands += [(hinged, np.array([j, t, side])) for j in range(n_own) for t in HINGE_KNOTS for side in (1.0, -1.0)]
    best = None
    for exps, hinge in cands:
        phi = _off_chain_basis(x, exps, hinge, np)
        coef = _lstsq(phi[train] * sw[:, None], target[train] * sw[:, None])
        errors = {}
        for name, test in tests.items():
            if len(test):
                d = phi[test] @ coef - target[test]
                errors[name] = {"off_chain_rmse": float(np.sqrt(np.mean(d ** 2))),
                                "off_chain_max": float(np.max(np.abs(d)))}
        score = float(np.sqrt(np.mean([e["off_chain_rmse"] ** 2 for e in errors.values()])))
        if best is None or score < best[0]:
            best = (score, exps, coef, hinge, errors)
    return best[1], best[2], best[3], best[4]


def _selection_score(errors: Mapping[str, Mapping[str, float]]) -> float:
    """Held-out moment-arm RMSE that picks a fit's degree and hinge: the test sets of
    `_fit_one` (uniform and, with poses, visited samples) counted equally (m)."""
    return float(np.sqrt(np.mean([e["moment_arm_rmse"] ** 2 for e in errors.values()])))


def _visited_poses(poses: Sequence[pd.DataFrame], coords: Sequence[str], lower: np.ndarray,
                   upper: np.ndarray, n: int, jitter_rad: float, rng: np.random.Generator) -> np.ndarray:
    """(n, K) poses drawn from trial frames (columns by coordinate name), each rotational
    coordinate jittered by N(0, jitter_rad), clipped to the box; coordinates the frames lack
    are drawn uniformly in the box."""
    blocks = []
    for df in poses:
        cols = {coordinate_name(str(c)): c for c in df.columns}
        block = np.full((len(df), len(coords)), np.nan)
        for j, c in enumerate(coords):
            if c in cols:
                block[:, j] = np.asarray(df[cols[c]], dtype=float)
        blocks.append(block)
    table = np.vstack(blocks)
    table = table[~np.all(np.isnan(table), axis=1)]
    if len(table) == 0 or n == 0:
        return np.zeros((0, len(coords)))
    rows = rng.choice(len(table), size=n, replace=n > len(table))
    q = table[rows]
    missing = np.isnan(q)
    q[missing] = rng.uniform(np.broadcast_to(lower, q.shape), np.broadcast_to(upper, q.shape))[missing]
    rotational = np.array([not _is_translation(c) for c in coords])
    q[:, rotational] += rng.normal(0.0, jitter_rad, size=(n, int(rotational.sum()))) * (~missing[:, rotational])
    return np.clip(q, lower, upper)


def model_hash(model_osim: str | Path) -> str:
    """sha256 of the model file's bytes (hex)."""
    return hashlib.sha256(Path(model_osim).read_bytes()).hexdigest()


def surrogate_cache_path(model_osim: str | Path, key: str) -> Path:
    """Cache file of a surrogate beside its model."""
    p = Path(model_osim)
    return p.with_name(f"{p.stem}.muscle_surrogate.{key[:16]}.npz")


def fit_muscle_surrogate(
    model_osim: str | Path,
    ranges: Mapping[str, tuple[float, float]] | pd.DataFrame | Sequence[pd.DataFrame],
    *,
    moment_arms: str = "opensim",
    muscles: Sequence[str] | None = None,
    max_degree: int = 5,
    min_degree: int = 3,
    n_samples: int | None = None,
    tolerance_m: float = 1e-4,
    seed: int = 0,
    holdout: float = 0.2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    poses: pd.DataFrame | Sequence[pd.DataFrame] | None = None,
    n_visited: int = 800,
    visited_jitter_deg: float = 2.0,
    visited_weight: float = 1.0,
    hinges: bool = True,
) -> MuscleSurrogate:
    """Fit (or load from cache) the muscle-geometry surrogate of a scaled model.

    model_osim: scaled .osim. ranges: coordinate -> (low, high) in rad / m (e.g. from
    `coordinate_ranges` over the subject's trials), or coordinate frames to take them from (5 deg
    / 2 cm margin). Spanned coordinates the ranges omit get their OpenSim range clipped to +-1 rad
    around the default. moment_arms: "opensim" | "dLdq" (module docstring). n_samples: OpenSim
    poses (default: 40/3 x the largest monomial count, at least 600). tolerance_m: held-out
    moment-arm RMSE below which the degree search stops. holdout: fraction of samples kept
    out of the fit for the reported errors. cache / cache_dir: .npz beside the model (or in
    cache_dir) keyed by model hash + box + settings (+ the visited poses).
    poses: coordinate frames of the trials the surrogate will serve (e.g. the subject's IK). The
    uniform box samples are then joined by `n_visited` poses drawn from these frames, each
    rotational coordinate jittered by `visited_jitter_deg` (normal SD; kept in the box), and the
    fit weights the visited samples `visited_weight` times as much in total as the uniform ones:
    a polynomial over a 5-D box is least accurate in corners and along edges that motions hardly
    visit, while its errors on the visited poses are what the activations feel.
    hinges: where a muscle's best polynomial misses `tolerance_m`, also try one hinge term
    max(0, x_j - t) (times low-degree monomials, `hinge_exponents`) at knots t in
    `HINGE_KNOTS` of each spanned coordinate with a range over `HINGE_MIN_RANGE_RAD`, and keep
    the best if it cuts the held-out error by `HINGE_MIN_GAIN`: moment arms have kinks where a
    path starts to wrap (Rajagopal's quadriceps at ~100 deg knee flexion, the bottom of a deep
    squat), which no polynomial follows.
    Returns a MuscleSurrogate; `metadata` holds per-muscle and overall held-out errors (mm) on
    the uniform samples (`errors_mm`) and, with poses, on the visited ones (`errors_visited_mm`).
    """
    if moment_arms not in MOMENT_ARM_MODES:
        raise ConfigError(f"moment_arms must be one of {MOMENT_ARM_MODES}, got {moment_arms!r}")
    if not 1 <= min_degree <= max_degree <= 8:
        raise ConfigError(f"need 1 <= min_degree <= max_degree <= 8, got {min_degree}, {max_degree}")
    model_osim = Path(model_osim)
    if not model_osim.is_file():
        raise InputFormatError("model file does not exist", model_osim)
    frames_given = isinstance(ranges, Sequence) and ranges and isinstance(ranges[0], pd.DataFrame)
    if isinstance(ranges, pd.DataFrame) or frames_given:
        ranges = coordinate_ranges(ranges)
    ranges = {str(k): (float(v[0]), float(v[1])) for k, v in dict(ranges).items()}
    if poses is not None:
        poses = [poses] if isinstance(poses, pd.DataFrame) else list(poses)
        poses = poses or None
    if n_visited < 0 or visited_jitter_deg < 0 or visited_weight < 0:
        raise ConfigError("n_visited, visited_jitter_deg and visited_weight must be >= 0")
    t_start = time.perf_counter()
    model = load_model(model_osim)
    ms = model.getMuscles()
    all_muscles = [ms.get(i).getName() for i in range(ms.getSize())]
    muscles = list(muscles) if muscles is not None else all_muscles
    unknown = [m for m in muscles if m not in all_muscles]
    if unknown:
        raise ConfigError(f"muscles not in the model: {unknown}", model_osim)
    free, _ = _independent_free(model)
    cs = model.getCoordinateSet()
    box = {}
    for c in free:
        if c in ranges:
            box[c] = ranges[c]
        else:
            d = cs.get(c).getDefaultValue()
            box[c] = (max(cs.get(c).getRangeMin(), d - 1.0), min(cs.get(c).getRangeMax(), d + 1.0))
    mhash = model_hash(model_osim)
    settings = {"moment_arms": moment_arms, "max_degree": max_degree, "min_degree": min_degree,
                "n_samples": n_samples, "tolerance_m": tolerance_m, "seed": seed, "holdout": holdout,
                "muscles": muscles, "version": SURROGATE_VERSION}
    if hinges:
        settings |= {"hinges": {"knots": HINGE_KNOTS.tolist(), "min_range_rad": HINGE_MIN_RANGE_RAD,
                                "min_gain": HINGE_MIN_GAIN}}
    if poses is not None and n_visited > 0:
        settings |= {"n_visited": n_visited, "visited_jitter_deg": visited_jitter_deg,
                     "visited_weight": visited_weight}
    key_obj = {"hash": mhash, "box": {c: [round(v, 6) for v in box[c]] for c in sorted(box)}, "settings": settings}
    if "n_visited" in settings:
        h = hashlib.sha256()
        for df in poses:
            h.update(",".join(map(str, df.columns)).encode())
            h.update(np.round(df.to_numpy(dtype=float), 6).tobytes())
        key_obj["poses"] = h.hexdigest()
    key_src = json.dumps(key_obj, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()
    cache_path = (Path(cache_dir) / surrogate_cache_path(model_osim, key).name) if cache_dir else \
        surrogate_cache_path(model_osim, key)
    if cache and cache_path.is_file():
        sur = MuscleSurrogate.load(cache_path)
        sur.metadata["cache"] = {"path": str(cache_path), "hit": True}
        return sur

    spans = find_spanned_coordinates(model, muscles, box, seed=seed, off_chain=moment_arms == "opensim")
    too_many = {m: s for m, s in spans.items() if len(s) > 6}
    if too_many:
        raise ConfigError(f"muscles spanning more than 6 coordinates are not supported: {too_many}", model_osim)
    coords = [c for c in free if any(c in s for s in spans.values())]
    lower = np.array([box[c][0] for c in coords])
    upper = np.array([box[c][1] for c in coords])
    degenerate = [c for c, lo, hi in zip(coords, lower, upper) if not hi > lo]
    if degenerate:
        raise ConfigError(f"coordinate ranges must have high > low: {degenerate}")
    # the automatic sample count follows the tree-path spans: off-chain moment arms (0.1-0.3 mm,
    # the gastrocnemii about the hip) need no more poses, and doubling them would double the fit
    chain = {m: set(span_candidates(model, m)) for m in muscles}
    max_k = max((len([c for c in s if c in chain[m]]) for m, s in spans.items()), default=1)
    n_mono = len(monomial_exponents(max_k, max_degree))
    n_samples = int(n_samples or max(600, 40 * n_mono // 3))
    t_sample = time.perf_counter()
    rng = np.random.default_rng(seed + 2)
    q_uniform = np.random.default_rng(seed + 1).uniform(lower, upper, size=(n_samples, len(coords)))
    q_visited = (_visited_poses(poses, coords, lower, upper, n_visited, np.deg2rad(visited_jitter_deg), rng)
                 if "n_visited" in settings else np.zeros((0, len(coords))))
    data = sample_muscle_geometry(model, muscles, spans, lower, upper, coords, 0, moment_arms=moment_arms,
                                  q=np.vstack([q_uniform, q_visited]))
    t_sampled = time.perf_counter()
    half = 0.5 * (upper - lower)
    x_all = (data["q"] - 0.5 * (lower + upper)) / half
    perm = rng.permutation(n_samples)
    n_test = max(1, int(round(holdout * n_samples)))
    test, train = perm[:n_test], perm[n_test:]
    n_vis = len(q_visited)
    weight = np.ones(n_samples + n_vis)
    tests = {"uniform": test}
    if n_vis:
        perm_v = n_samples + rng.permutation(n_vis)
        n_test_v = max(1, int(round(holdout * n_vis)))
        tests["visited"] = perm_v[:n_test_v]
        train = np.concatenate([train, perm_v[n_test_v:]])
        weight[n_samples:] = visited_weight * (n_samples - n_test) / max(1, n_vis - n_test_v)
    fits, errors, errors_visited = {}, {}, {}
    key_t = "ma" if moment_arms == "opensim" else "grad"
    for i, m in enumerate(muscles):
        own = [c for c in spans[m] if c in chain[m]]
        off = [c for c in spans[m] if c not in chain[m]]
        cols = [coords.index(c) for c in own]
        x = x_all[:, cols]
        target = data[f"{key_t}_{i}"][:, [spans[m].index(c) for c in own]]
        best = None
        # muscles spanning few coordinates get higher degrees (cheap: few monomials); the vasti's
        # patellar path over a deep-squat knee range needs degree 7-8 in the knee angle alone
        cap = min(8, max_degree + max(0, 4 - len(cols)))
        for deg in range(min_degree, cap + 1):
            if len(monomial_exponents(len(cols), deg)) * 1.5 > n_samples - n_test:
                break
            fit, err = _fit_one(x, data["length"][:, i], target, half[cols], train, tests, deg, moment_arms, 0.05,
                                weight)
            score = _selection_score(err)
            if best is None or score < best[2]:
                best = (fit, err, score)
            if score < tolerance_m:
                break
        if hinges and best[2] > tolerance_m:
            wide = [j for j, c in enumerate(cols) if upper[c] - lower[c] > HINGE_MIN_RANGE_RAD]
            hinged = None
            for j in wide:
                for t in HINGE_KNOTS:
                    fit, err = _fit_one(x, data["length"][:, i], target, half[cols], train, tests, best[0].degree,
                                        moment_arms, 0.05, weight, hinges=np.array([[j, t]]))
                    score = _selection_score(err)
                    if hinged is None or score < hinged[2]:
                        hinged = (fit, err, score)
            if hinged is not None and hinged[2] < (1.0 - HINGE_MIN_GAIN) * best[2]:
                best = hinged
        fit, err, _ = best
        fit.coordinates = tuple(own)
        if off:
            fit.off_chain = tuple(off)
            fit.off_exponents, fit.off_arm_coef, fit.off_hinge, off_err = _fit_off_chain(
                x_all[:, cols + [coords.index(c) for c in off]], data[f"{key_t}_{i}"][:, [spans[m].index(c) for c in off]],
                len(cols), train, tests, weight)
            for name, e in off_err.items():
                err[name] |= e
        fits[m] = fit
        errors[m] = {k: v * 1000.0 for k, v in err["uniform"].items()} | {"degree": fit.degree}
        if fit.hinges is not None:
            j, t = int(fit.hinges[0, 0]), float(fit.hinges[0, 1])
            c = cols[j]
            errors[m]["hinge"] = {"coordinate": spans[m][j], "knot": float(0.5 * (lower[c] + upper[c]) + t * half[c])}
        if "visited" in err:
            errors_visited[m] = {k: v * 1000.0 for k, v in err["visited"].items()}
    t_end = time.perf_counter()
    ma_rmse = np.array([e["moment_arm_rmse"] for e in errors.values()])
    ln_rmse = np.array([e["length_rmse"] for e in errors.values()])
    metadata = {
        "model_sha256": mhash, "opensim_version": opensim_version(), "surrogate_version": SURROGATE_VERSION,
        "moment_arm_definition": moment_arms,
        "moment_arm_definition_doc": ("OpenSim Muscle.computeMomentArm (generalized force of unit tension)"
                                      if moment_arms == "opensim" else "-dL/dq of the fitted length polynomial"),
        "settings": settings | {"n_samples": n_samples}, "box": {c: box[c] for c in coords},
        "errors_mm": errors,
        "summary_mm": {"moment_arm_rmse_median": float(np.median(ma_rmse)), "moment_arm_rmse_max": float(ma_rmse.max()),
                       "moment_arm_max_abs": float(max(e["moment_arm_max"] for e in errors.values())),
                       "length_rmse_median": float(np.median(ln_rmse)), "length_rmse_max": float(ln_rmse.max())}
        | ({"visited_moment_arm_rmse_median": float(np.median([e["moment_arm_rmse"] for e in errors_visited.values()])),
            "visited_moment_arm_rmse_max": float(max(e["moment_arm_rmse"] for e in errors_visited.values())),
            "visited_moment_arm_max_abs": float(max(e["moment_arm_max"] for e in errors_visited.values())),
            "n_visited": int(n_vis)} if errors_visited else {}),
        "errors_visited_mm": errors_visited,
        "timing_s": {"setup": t_sample - t_start, "sampling": t_sampled - t_sample, "fitting": t_end - t_sampled,
                     "total": t_end - t_start},
        "cache": {"path": str(cache_path), "hit": False},
    }
    sur = MuscleSurrogate(model_path=str(model_osim), coordinates=tuple(coords), lower=lower, upper=upper,
                          muscles=tuple(muscles), fits=fits, moment_arms=moment_arms, metadata=metadata)
    if cache:
        try:
            sur.save(cache_path)
        except OSError as exc:  # read-only model folder (e.g. the installed generic model)
            import warnings

            warnings.warn(f"{cache_path}: muscle surrogate not cached ({exc}); pass cache_dir", stacklevel=2)
            sur.metadata["cache"]["error"] = str(exc)
    return sur


def opensim_muscle_geometry(model_osim: str | Path, coordinates: pd.DataFrame, muscles: Sequence[str],
                            spans: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """OpenSim's own lengths (T, M) and computeMomentArm (T, M, per muscle spans) at given poses,
    for validating a surrogate on held-out trial frames. Returns {"length", "moment_arm_<i>"}."""
    model = load_model(model_osim)
    poser = _Poser(model)
    ms = model.getMuscles()
    mus = [ms.get(m) for m in muscles]
    names = [coordinate_name(str(c)) for c in coordinates.columns]
    settable = [(n, i) for i, n in enumerate(names) if n in poser.coord and n not in poser.deps
                and not poser.coord[n].get_locked()]
    values = coordinates.to_numpy(dtype=float)
    out = {"length": np.empty((len(values), len(muscles)))}
    for i, m in enumerate(muscles):
        out[f"moment_arm_{i}"] = np.empty((len(values), len(spans[m])))
    for t, row in enumerate(values):
        poser.set({n: row[i] for n, i in settable})
        out["length"][t] = [mo.getLength(poser.state) for mo in mus]
        for i, (m, mo) in enumerate(zip(muscles, mus)):
            out[f"moment_arm_{i}"][t] = [mo.computeMomentArm(poser.state, poser.coord[c]) for c in spans[m]]
    return out


__all__ = [
    "MOMENT_ARM_MODES", "MuscleFit", "MuscleSurrogate", "coordinate_ranges", "find_spanned_coordinates",
    "span_candidates",
    "fit_muscle_surrogate", "model_hash", "monomial_exponents", "opensim_muscle_geometry",
    "sample_muscle_geometry", "surrogate_cache_path",
]
