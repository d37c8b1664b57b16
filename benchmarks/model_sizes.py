"""Parameter counts of real checkpoints, computed from their published configs on the meta
device (nothing downloaded, nothing allocated), and their bf16 weight memory (2 bytes a
parameter). llmiqa/tiny/families.py carries these numbers into README's models table.

    .venv/bin/python benchmarks/model_sizes.py
"""

from __future__ import annotations

from real_configs import NAMES, build


def count(name: str) -> tuple[int, int]:
    """(all parameters, those of the vision tower)."""
    model = build(name)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(
        p.numel()
        for key, p in model.named_parameters()
        if any(part in key for part in ("visual", "vision"))
    )
    return total, vision


if __name__ == "__main__":
    print("| checkpoint | parameters (computed) | vision tower | bf16 weights |")
    print("|---|---|---|---|")
    for name in NAMES:
        total, vision = count(name)
        print(f"| {name} | {total / 1e9:.3f} B ({total:,}) | {vision / 1e9:.3f} B "
              f"| {2 * total / 1e9:.1f} GB |")  # fmt: skip
