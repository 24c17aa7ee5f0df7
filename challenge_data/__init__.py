"""Challenge recipes (TOML) and the committed checksums of the embedded ones."""
