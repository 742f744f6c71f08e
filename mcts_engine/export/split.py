"""The train/val split: by sample, keyed on image content hashes, leak-free (samples sharing an image
stay together) and deterministic given the keys and the seed. Pure.
"""

from __future__ import annotations

import hashlib


def assign_splits(keys: dict[str, list[str]], val_fraction: float, seed: int) -> dict[str, str]:
    """``sample id -> "train" | "val"``. Samples that share any image key form one group (union-find);
    groups are ordered by ``sha256(seed:key)`` and taken into val until it holds ``round(f·N)`` samples
    (at least one when ``f > 0`` and N ≥ 2; never every sample)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ks in keys.values():
        for k in ks[1:]:
            a, b = find(ks[0]), find(k)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = {}
    for sid, ks in keys.items():
        groups.setdefault(find(ks[0]) if ks else f"id:{sid}", []).append(sid)
    out = {sid: "train" for sid in keys}
    n = len(keys)
    if val_fraction <= 0 or n < 2:
        return out
    target = max(1, round(val_fraction * n))
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    taken = 0
    for g in order:
        if taken >= target:
            break
        if taken + len(groups[g]) >= n:
            continue
        for sid in groups[g]:
            out[sid] = "val"
        taken += len(groups[g])
    return out
