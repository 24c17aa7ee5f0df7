"""Learned single-encryption decoders: `deep_decompose` and `gan_demask` (Huang et al., ICML
2020, Sec. 5). Importing this package registers them; torch is imported only when one runs."""

from hidebench.attacks.decoders import deep_decompose, gan_demask  # noqa: F401
