"""Train / validation / test splits of a dataset, held out by subject and by motion type.

- `held_out_subjects`: the test set is every trial of `n_test_subjects` subjects; the validation
  set every trial of `n_val_subjects` other subjects; training the rest.
- `held_out_motions`: the test set is every trial (all subjects) of the held-out motion types;
  the validation set is the trials of `n_val_subjects` subjects on the remaining motions;
  training the remaining motions of the remaining subjects. No held-out motion is ever trained on
  or used for model selection.

Both are deterministic functions of the trial table and the seed. `check_split` raises
`SplitError` on any leak (a subject in train and test / validation of the subject split, a
held-out motion in train or validation, a validation subject in training).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from biohuman.errors import BiohumanError

SPLIT_NAMES: tuple[str, ...] = ("held_out_subjects", "held_out_motions")


class SplitError(BiohumanError):
    """A split is impossible with the data at hand, or leaks subjects / motions across its parts."""


@dataclass(frozen=True)
class Split:
    """Trial ids of each part plus what is held out."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    test_subjects: tuple[str, ...] = ()
    val_subjects: tuple[str, ...] = ()
    test_motions: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "train": list(self.train), "val": list(self.val), "test": list(self.test),
                "test_subjects": list(self.test_subjects), "val_subjects": list(self.val_subjects),
                "test_motions": list(self.test_motions)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Split":
        return cls(d["name"], tuple(d["train"]), tuple(d["val"]), tuple(d["test"]), tuple(d.get("test_subjects", ())),
                   tuple(d.get("val_subjects", ())), tuple(d.get("test_motions", ())))


def _table(trials: pd.DataFrame) -> pd.DataFrame:
    need = {"trial_id", "subject_id", "motion_type"}
    if not need <= set(trials.columns):
        raise SplitError(f"trial table lacks columns {sorted(need - set(trials.columns))}")
    return trials.sort_values("trial_id").reset_index(drop=True)


def _pick(items: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    items = sorted(items)
    return sorted(items[i] for i in rng.permutation(len(items))[:n])


def held_out_subjects(trials: pd.DataFrame, seed: int, n_test_subjects: int = 1, n_val_subjects: int = 1) -> Split:
    """Subject-disjoint train / val / test split (see module doc)."""
    t = _table(trials)
    subjects = sorted(t.subject_id.unique())
    if len(subjects) < n_test_subjects + n_val_subjects + 1:
        raise SplitError(f"held_out_subjects needs >= {n_test_subjects + n_val_subjects + 1} subjects, "
                         f"the dataset has {len(subjects)}")
    rng = np.random.default_rng([seed, 1])
    test_s = _pick(subjects, n_test_subjects, rng)
    val_s = _pick([s for s in subjects if s not in test_s], n_val_subjects, rng)
    part = t.subject_id.map(lambda s: "test" if s in test_s else "val" if s in val_s else "train")
    return Split("held_out_subjects", *(tuple(t.trial_id[part == p]) for p in ("train", "val", "test")),
                 test_subjects=tuple(test_s), val_subjects=tuple(val_s))


def held_out_motions(trials: pd.DataFrame, seed: int, test_motions: Sequence[str] | None = None,
                     n_test_motions: int = 1, n_val_subjects: int = 1) -> Split:
    """Motion-disjoint test split with a subject-disjoint validation set (see module doc).
    test_motions: the motion types to hold out (default: `n_test_motions` drawn from the seed)."""
    t = _table(trials)
    motions = sorted(t.motion_type.unique())
    subjects = sorted(t.subject_id.unique())
    rng = np.random.default_rng([seed, 2])
    if test_motions:
        missing = sorted(set(test_motions) - set(motions))
        if missing:
            raise SplitError(f"held-out motions {missing} are not in the dataset ({motions})")
        test_m = sorted(test_motions)
    else:
        test_m = _pick(motions, n_test_motions, rng)
    if len(set(motions) - set(test_m)) < 1:
        raise SplitError(f"holding out {test_m} leaves no motion to train on")
    if len(subjects) < n_val_subjects + 1:
        raise SplitError(f"held_out_motions needs >= {n_val_subjects + 1} subjects, the dataset has {len(subjects)}")
    val_s = _pick(subjects, n_val_subjects, rng)
    is_test = t.motion_type.isin(test_m)
    is_val = ~is_test & t.subject_id.isin(val_s)
    is_train = ~is_test & ~is_val
    return Split("held_out_motions", tuple(t.trial_id[is_train]), tuple(t.trial_id[is_val]), tuple(t.trial_id[is_test]),
                 val_subjects=tuple(val_s), test_motions=tuple(test_m))


def make_splits(trials: pd.DataFrame, cfg: Mapping[str, Any], seed: int) -> dict[str, Split]:
    """Both splits from the `train.splits` config section; each is checked for leaks."""
    out = {
        "held_out_subjects": held_out_subjects(trials, seed, int(cfg.get("n_test_subjects", 1)),
                                               int(cfg.get("n_val_subjects", 1))),
        "held_out_motions": held_out_motions(trials, seed, cfg.get("test_motions") or None,
                                             int(cfg.get("n_test_motions", 1)), int(cfg.get("n_val_subjects", 1))),
    }
    for s in out.values():
        check_split(s, trials)
    return out


def check_split(split: Split, trials: pd.DataFrame) -> None:
    """Raise SplitError when parts overlap, a trial is unknown, a part is empty, the validation
    subjects appear in training, or (by split type) a test subject / test motion leaks into
    training or validation."""
    t = _table(trials).set_index("trial_id")
    parts = {"train": set(split.train), "val": set(split.val), "test": set(split.test)}
    problems = []
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        if parts[a] & parts[b]:
            problems.append(f"trials in both {a} and {b}: {sorted(parts[a] & parts[b])}")
    unknown = set().union(*parts.values()) - set(t.index)
    if unknown:
        problems.append(f"unknown trials {sorted(unknown)}")
    for p, ids in parts.items():
        if not ids:
            problems.append(f"empty {p} set")
    if problems:
        raise SplitError(f"split {split.name}: " + "; ".join(problems))
    subj = {p: set(t.loc[sorted(ids), "subject_id"]) for p, ids in parts.items()}
    mot = {p: set(t.loc[sorted(ids), "motion_type"]) for p, ids in parts.items()}
    if subj["train"] & subj["val"]:
        problems.append(f"validation subjects also in training: {sorted(subj['train'] & subj['val'])}")
    if split.name == "held_out_subjects":
        for p in ("train", "val"):
            if subj[p] & subj["test"]:
                problems.append(f"test subjects also in {p}: {sorted(subj[p] & subj['test'])}")
    elif split.name == "held_out_motions":
        for p in ("train", "val"):
            if mot[p] & mot["test"]:
                problems.append(f"held-out motions also in {p}: {sorted(mot[p] & mot['test'])}")
    else:
        problems.append(f"unknown split type {split.name!r}")
    if problems:
        raise SplitError(f"split {split.name}: " + "; ".join(problems))
