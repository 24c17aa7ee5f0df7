"""TextHide's core pieces (Huang, Song, Chen, Li, Arora, "TextHide: Tackling Data Privacy in
Language Understanding Tasks", Findings of EMNLP 2020): labelled sentence sources (corpus), the
offline sentence encoder and its representation cache (encoder), the scheme's parameters
(scheme), the public view and key of a release (types), reading and writing releases (release),
recipes (recipe), the attacker's threat model (threat) and the metrics (metrics).

Everything here is core: it imports neither attacks, defenses nor the front end. The heavy
dependencies (transformers, the encoder and corpus packages of the `text` extra) are imported
only when a sentence is encoded or a corpus read.
"""
