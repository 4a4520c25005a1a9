"""How sizes, counts and shapes are written for people: one convention for the CLI and the app."""

from __future__ import annotations


def format_shape(shape: tuple[int, ...]) -> str:
    """'[768, 2304]' style; '[]' for a scalar."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def human_count(n: int) -> str:
    """Element counts the way model sizes are spoken: 124.4M, 7.0B, 3,072."""
    if n < 10_000:
        return f"{n:,}"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    """Binary units with one decimal: 512 B, 1.5 KiB, 248.0 MiB."""
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"  # not reached
