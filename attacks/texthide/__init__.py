"""Attacks on TextHide releases (hidebench.text): mask-pool recovery, unmixing, inversion to text.

Module map: config (the typed sections), reference (the attacker's statistics of the
representations), masks, unmix, invert (the steps), stages (the cached pipeline the three
attacks share), attack (the registered attacks texthide_masks, texthide_unmix, texthide_invert).
"""
