"""Grouping: which private images each encryption of a release mixes.

Carlini et al. (arXiv 2011.05315, Sec. 5.2-5.3) find them in three steps, and every release
attack that fuses encryptions per private image needs them (carlini's regression, the
decoders' fusion, fdn):

    similarity   a score for every pair of encryptions (a CNN trained on the attacker's own
                 encryptions, or Pearson correlation of |e|)
    clustering   one core group of encryptions per private image
    assignment   every encryption gets its private-slot groups (min-cost flow), optionally
                 rescored against whole groups (group_model: the paper's second graph)

Module map: config (the typed sections), membership (labels, memberships, the release's fit),
nets (the similarity networks and their training loop), similarity, group_model, clustering,
assignment, groups (the dense path and its evaluation), scalable (the same without an E x E
matrix), count (T for a release that states none), stages (the two cached stages,
similarity_model and grouping, any attack runs through hidebench.pipeline).
"""
