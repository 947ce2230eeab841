"""Evidence others can verify: signing keys, DSSE envelopes over in-toto statements, run attestations and
signed lineage cards (DESIGN §8). The lowest wing: it knows files and digests, not runs or policies."""
