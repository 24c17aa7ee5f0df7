"""Challenge recipes (TOML) and the committed checksums of the embedded ones, the stock sweeps
(sweeps/) and the published figures the sweep report ranks beside its own (anchors/, one JSON
file per leaderboard entry)."""
