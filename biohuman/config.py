"""Configuration: load config.yaml, validate it against workflow/schemas/config.schema.yaml and
fill in the schema's defaults (the one validated home of every setting)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from biohuman.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _default_filling_validator(schema: dict):  # noqa: ANN202 - a jsonschema validator class
    """A Draft 2020-12 validator that writes `default` values into missing properties."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def load_schema() -> dict:
    """The config schema (YAML) as a dict."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of `config` with all defaults filled in.

    Raises ConfigError listing every violation with its key path.
    """
    cfg = copy.deepcopy(dict(config))
    validator = _default_filling_validator(load_schema())
    # two passes: the first fills nested defaults of objects that were themselves defaulted
    for _ in range(2):
        errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    from biohuman.reference import check_reference_config

    check_reference_config(cfg)  # reference_solvers.trials must name trials of this config
    train = cfg.get("train") or {}
    from biohuman.nn.frontend import FRONTENDS

    if (train.get("augment") or {}).get("mirror") and "effnet" in FRONTENDS.get(str(train.get("frontend")), ()):
        raise ConfigError(f"train.augment.mirror needs a landmark-only front-end (train.frontend: mediapipe): cached "
                          f"image features of {train['frontend']!r} cannot be mirrored")
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path) from exc
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(exc.problem, path) from exc


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a (validated) config, recorded in every output's provenance."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


NON_LABELLING_KEYS: tuple[str, ...] = ("train", "reference_solvers")
"""Config sections that do not change the labels: the labelling rules never see them, so editing
them (e.g. training settings) does not make Snakemake re-label every trial."""


def labelling_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a validated config the labelling rules get (their params and provenance hash).

    `activation_solver: cmc | moco_inverse` reads its solver options from `reference_solvers`,
    which is then kept."""
    drop = set(NON_LABELLING_KEYS)
    if config.get("activation_solver") in ("cmc", "moco_inverse"):
        drop.discard("reference_solvers")
    return {k: v for k, v in config.items() if k not in drop}
