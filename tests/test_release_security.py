"""A release's public files must hold no key material (issue: the public manifest once listed
the sha256 of key/seed, which let anyone brute-force a small seed and rebuild the whole key,
and confirm a guess of the private set)."""
import hashlib
import json

import numpy as np
import pytest

from hidebench.challenge_io import KEY_FILES, PUBLIC_FILES, load_key
from hidebench.defenses.challenge import generate_to_dir
from hidebench.recipes import challenge_data, load_recipe

SEED = 0x5EED_1234_ABCD_9876          # large, so no encoding of it turns up in image bytes by chance


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "ch"
    generate_to_dir(load_recipe("faces", {"n_priv": 6, "T": 4, "pool_screen": 30}), out, seed=SEED, progress=False)
    return out


def _needles(d):
    """Byte strings that would betray the key: hashes of key files, the seed in several
    encodings, rows of the selection, of the coefficients and of the mask, private pixels."""
    key = load_key(d)
    out = {}
    for name in KEY_FILES:
        digest = hashlib.sha256((d / "key" / name).read_bytes())
        out[f"sha256 hex of key/{name}"] = digest.hexdigest()[:16].encode()
        out[f"sha256 bytes of key/{name}"] = digest.digest()[:8]
    out["seed decimal"] = str(SEED).encode()
    out["seed hex"] = f"{SEED:x}".encode()
    out["seed HEX"] = f"{SEED:X}".encode()
    out["seed little-endian"] = SEED.to_bytes(8, "little")
    out["seed big-endian"] = SEED.to_bytes(8, "big")
    for e in range(3):
        out[f"selection row {e}"] = key.selection[e].astype(np.int64).tobytes()
        out[f"selection row {e} (int32)"] = key.selection[e].astype(np.int32).tobytes()
        out[f"public coefficients row {e}"] = key.lambdas[e, 2:].astype(np.float32).tobytes()
        out[f"coefficient row {e}"] = key.lambdas[e].astype(np.float32).tobytes()
        out[f"mask row {e}"] = key.sign[e].ravel()[:48].astype(np.int8).tobytes()
        out[f"mask row {e} as text"] = json.dumps(key.sign[e].ravel()[:24].tolist()).encode()
        out[f"private image {e}"] = key.private[e].ravel()[:16].astype(np.float32).tobytes()
    fp = json.loads((d / "key" / "manifest.json").read_text())["private_source_fingerprint"]
    out["private-source fingerprint"] = fp.encode()
    return out


@pytest.mark.parametrize("public_file", PUBLIC_FILES + ("manifest.json",))
def test_public_file_holds_no_key_material(release, public_file):
    blob = (release / public_file).read_bytes()
    found = [what for what, needle in _needles(release).items() if needle in blob]
    assert found == [], f"{public_file} contains {found}"


def test_nothing_but_the_release_outside_key(release):
    assert sorted(p.name for p in release.iterdir()) == sorted(PUBLIC_FILES + ("manifest.json", "key"))
    manifest = json.loads((release / "manifest.json").read_text())
    assert "key/" not in json.dumps(manifest) and "seed" not in manifest["recipe"]


def test_only_the_demo_recipe_carries_a_seed():
    """A seed in a stock recipe makes its key public: allowed for the embedded demo only."""
    import tomllib

    seeded = []
    for res in challenge_data().iterdir():
        if res.name.endswith(".toml") and "seed" in tomllib.loads(res.read_text()):
            seeded.append(res.name[:-5])
    assert seeded == ["faces"]
