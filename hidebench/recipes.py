"""Challenge recipes: TOML files in challenge_data/ (or any path), validated into dataclasses.

A recipe names the private source and how many images, the scheme (k, mode, T, c1, c2), the
public pool and its SIFT filter, the attacker's auxiliary data, and a default seed. Unknown
keys are an error naming the key.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hidebench.config import Config, check_int
from hidebench.data import PoolConfig
from hidebench.scheme import EncryptionConfig
from hidebench.stock import challenge_data
from hidebench.types import HidebenchError


@dataclass
class PrivateConfig(Config):
    section = "private"
    source: str = "lfw"
    n_priv: int = 100

    def validate(self):
        if not self.source.strip():
            raise HidebenchError(f"private.source must name a data source, got {self.source!r}")
        self.n_priv = check_int(self.n_priv, "private.n_priv", min=1)


@dataclass
class AttackerConfig(Config):
    section = "attacker"
    aux: str | None = None


@dataclass
class Recipe:
    name: str
    description: str = ""
    seed: int | None = None
    private: PrivateConfig = field(default_factory=PrivateConfig)
    scheme: EncryptionConfig = field(default_factory=EncryptionConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    attacker: AttackerConfig = field(default_factory=AttackerConfig)

    def to_dict(self, *, with_seed: bool = True) -> dict:
        d = dataclasses.asdict(self)
        d["scheme"] = self.scheme.to_dict()
        if not with_seed:
            d.pop("seed")
        return d


_SECTIONS = {"private": PrivateConfig, "scheme": EncryptionConfig, "pool": PoolConfig, "attacker": AttackerConfig}
# Flat override names (CLI flags) -> (section, key).
OVERRIDES = {"n_priv": ("private", "n_priv"), "private_source": ("private", "source"), "T": ("scheme", "T"),
             "k": ("scheme", "k"), "mode": ("scheme", "mode"), "scheme": ("scheme", "scheme"), "c1": ("scheme", "c1"),
             "c2": ("scheme", "c2"), "pool_source": ("pool", "source"), "min_keypoints": ("pool", "min_keypoints"),
             "pool_screen": ("pool", "screen"), "aux": ("attacker", "aux"),
             "augment": ("scheme", "augment")}


def _section(cls, values, where: str):
    if not isinstance(values, dict):
        raise HidebenchError(f"recipe {where}: [{where}] must be a table")
    try:
        return cls.from_dict(values, where=where)
    except HidebenchError as e:
        msg = str(e)
        raise HidebenchError(msg if where in msg else f"recipe [{where}]: {msg}") from None


def recipe_from_dict(d: dict, overrides: dict | None = None) -> Recipe:
    """Validate a recipe dict (as read from TOML), applying flat overrides (see OVERRIDES)."""
    return validated_recipe(Recipe, _SECTIONS, OVERRIDES, d, overrides,
                            unknown_override="unknown recipe override {key!r}; valid: {valid} and seed")


def validated_recipe(cls, section_types: dict, override_map: dict, d: dict, overrides: dict | None, *,
                     unknown_override: str):
    """A recipe of class `cls` from its dict: top-level keys checked (name, description, seed and
    the [sections] of `section_types`), flat overrides applied through `override_map` (flag ->
    (section, key)), every section validated by its config class. Shared by image and TextHide
    recipes (hidebench.text.recipe)."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    unknown = sorted(set(d) - {"name", "description", "seed", *section_types})
    if unknown:
        raise HidebenchError(f"recipe: unknown top-level key(s) {unknown}; valid: name, description, seed, "
                             f"{', '.join(f'[{s}]' for s in section_types)}")
    if "name" not in d:
        raise HidebenchError("recipe: missing key 'name'")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "seed":
            d["seed"] = value
            continue
        if key not in override_map:
            raise HidebenchError(unknown_override.format(key=key, valid=sorted(override_map)))
        section, name = override_map[key]
        if not isinstance(d.setdefault(section, {}), dict):
            raise HidebenchError(f"recipe {section}: [{section}] must be a table")
        d[section][name] = value
    sections = {s: _section(sc, d.get(s, {}), s) for s, sc in section_types.items()}
    seed = d.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise HidebenchError(f"recipe seed must be a non-negative integer, got {seed!r}")
    if not isinstance(d["name"], str) or not d["name"].strip():
        raise HidebenchError(f"recipe name must be a non-empty string, got {d['name']!r}")
    if not isinstance(d.get("description", ""), str):
        raise HidebenchError(f"recipe description must be a string, got {d['description']!r}")
    return cls(name=d["name"], description=d.get("description", ""), seed=seed, **sections)


def builtin_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in challenge_data().iterdir() if p.name.endswith(".toml"))


def read_recipe_dict(name_or_path: str) -> dict:
    """The TOML table of a built-in recipe by name or of a recipe file by path, unvalidated."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise HidebenchError(f"recipe file {p} does not exist")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise HidebenchError(f"recipe {p} is not UTF-8 text (TOML is UTF-8): {e}") from None
    else:
        res = challenge_data() / f"{name_or_path}.toml"
        if not res.is_file():
            raise HidebenchError(f"unknown recipe {name_or_path!r}; built-in recipes: {builtin_recipes()} (or give a .toml path)")
        text = res.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise HidebenchError(f"recipe {name_or_path}: invalid TOML: {e}") from e


def recipe_kind(d: dict) -> str:
    """'text' for a TextHide recipe ([scheme] scheme = "texthide", hidebench.text.recipe), else 'image'."""
    scheme = d.get("scheme") if isinstance(d, dict) else None
    return "text" if isinstance(scheme, dict) and scheme.get("scheme") == "texthide" else "image"


def load_recipe(name_or_path: str, overrides: dict | None = None) -> Recipe:
    """A built-in recipe by name ('instahide2020', 'faces') or a TOML file by path."""
    d = read_recipe_dict(name_or_path)
    if recipe_kind(d) == "text":
        raise HidebenchError(f"recipe {name_or_path} is a TextHide recipe: load it with hidebench.text.recipe.load_text_recipe")
    return recipe_from_dict(d, overrides)
