"""TextHide's parameters: what a text release states about how it was made (Huang et al. 2020,
reference code github.com/Hazelsuko07/TextHide, instahide.py and modeling_bert.py)."""
from __future__ import annotations

from dataclasses import dataclass

from hidebench.config import Config, check_choice, check_float, check_int
from hidebench.types import HidebenchError

TEXT_MODES = ("inside", "inter")
MAX_MASKS = 1 << 16


def text_private_slots(mode: str, k: int) -> int:
    """Private representations in each encryption: all k inside, ceil(k / 2) inter (TextHide-inter
    takes the odd-numbered partners from the public corpus)."""
    return k if mode == "inside" else (k + 1) // 2


@dataclass
class TextHideConfig(Config):
    """k representations mixed per encryption with coefficients |g| / sum|g|, g ~ N(0, I_k) (the
    reference code's, as InstaHide's `sample_lambdas` draws them, redrawn while one exceeds c1:
    1.0, the reference code's, rejects nothing), then multiplied by one of m random sign masks
    drawn once per release (the key's mask pool), chosen uniformly per encryption. T encryptions
    are made for each private sentence (as T epochs of training would). mode 'inside' mixes
    private sentences only (the paper's TextHide-intra); 'inter' takes floor(k / 2) partners from
    a public corpus (TextHide-inter)."""

    section = "scheme"
    scheme: str = "texthide"
    k: int = 4
    m: int = 256
    T: int = 10
    mode: str = "inside"
    c1: float = 1.0

    def validate(self):
        check_choice(self.scheme, "scheme.scheme", ("texthide",))
        check_choice(self.mode, "scheme.mode", TEXT_MODES)
        self.k = check_int(self.k, "scheme.k", min=2, max=64)
        self.m = check_int(self.m, "scheme.m", min=1, max=MAX_MASKS)
        self.T = check_int(self.T, "scheme.T", min=1)
        check_float(self.c1, "scheme.c1", min=0, max=1, min_open=True)
        if self.c1 * self.k <= 1:
            raise HidebenchError(f"infeasible: with k={self.k} coefficients summing to 1, at least one is "
                                 f">= 1/k = {1 / self.k:.3f} > c1={self.c1!r}")

    @property
    def n_private_slots(self) -> int:
        return text_private_slots(self.mode, self.k)
