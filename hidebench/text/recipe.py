"""TextHide recipes: TOML files like the image recipes (challenge_data/*.toml), told apart by
`[scheme] scheme = "texthide"` (hidebench.recipes.recipe_kind).

    name = "texthide-rt"
    [private]    source (a text source, hidebench.text.corpus), n_priv
    [encoder]    name, pooling, max_length (hidebench.text.encoder.EncoderConfig)
    [scheme]     scheme = "texthide", k, m, T, mode (inside | inter), c1 (hidebench.text.scheme)
    [public]     source: the public corpus an 'inter' release mixes in
    [attacker]   candidates: the sentences the attacker holds (the inversion's search set), or absent

Unknown keys are errors naming the key, as for image recipes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hidebench.config import Config
from hidebench.recipes import PrivateConfig, read_recipe_dict, recipe_kind, validated_recipe
from hidebench.text.encoder import EncoderConfig
from hidebench.text.scheme import TextHideConfig
from hidebench.types import HidebenchError


@dataclass
class TextPrivateConfig(PrivateConfig):
    section = "private"
    source: str = "text:rotten_tomatoes[0::2]"
    n_priv: int = 500


@dataclass
class PublicTextConfig(Config):
    section = "public"
    source: str = "text:imdb[::25]"

    def validate(self):
        if not isinstance(self.source, str) or not self.source.strip():
            raise HidebenchError(f"public.source must name a text source, got {self.source!r}")


@dataclass
class TextAttackerConfig(Config):
    section = "attacker"
    candidates: str | None = None


@dataclass
class TextRecipe:
    name: str
    description: str = ""
    seed: int | None = None
    private: TextPrivateConfig = field(default_factory=TextPrivateConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    scheme: TextHideConfig = field(default_factory=TextHideConfig)
    public: PublicTextConfig = field(default_factory=PublicTextConfig)
    attacker: TextAttackerConfig = field(default_factory=TextAttackerConfig)

    def to_dict(self, *, with_seed: bool = True) -> dict:
        d = dataclasses.asdict(self)
        if not with_seed:
            d.pop("seed")
        return d


TEXT_SECTIONS = {"private": TextPrivateConfig, "encoder": EncoderConfig, "scheme": TextHideConfig,
                 "public": PublicTextConfig, "attacker": TextAttackerConfig}
# Flat override names (CLI flags, sweep grid keys) -> (section, key).
TEXT_OVERRIDES = {"n_priv": ("private", "n_priv"), "private_source": ("private", "source"), "T": ("scheme", "T"),
                  "k": ("scheme", "k"), "m": ("scheme", "m"), "mode": ("scheme", "mode"), "c1": ("scheme", "c1"),
                  "pooling": ("encoder", "pooling"), "public_source": ("public", "source"),
                  "candidates": ("attacker", "candidates")}


def text_recipe_from_dict(d: dict, overrides: dict | None = None) -> TextRecipe:
    """Validate a TextHide recipe dict (as read from TOML), applying flat overrides (TEXT_OVERRIDES)."""
    return validated_recipe(TextRecipe, TEXT_SECTIONS, TEXT_OVERRIDES, d, overrides,
                            unknown_override="{key!r} does not apply to a TextHide recipe; valid: {valid} and seed")


def is_text_recipe(name_or_path: str) -> bool:
    return recipe_kind(read_recipe_dict(name_or_path)) == "text"


def load_text_recipe(name_or_path: str, overrides: dict | None = None) -> TextRecipe:
    """A built-in TextHide recipe by name ('texthide-rt') or a TOML file by path."""
    d = read_recipe_dict(name_or_path)
    if recipe_kind(d) != "text":
        raise HidebenchError(f"recipe {name_or_path} is not a TextHide recipe (its [scheme] does not say "
                             "scheme = \"texthide\")")
    return text_recipe_from_dict(d, overrides)
