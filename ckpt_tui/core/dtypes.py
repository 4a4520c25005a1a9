"""Canonical dtype names and sizes shared by every reader (safetensors codes, torch names, DeepSpeed words)."""

from __future__ import annotations

# safetensors header dtype code -> (canonical torch-style name, bits per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "F32": ("float32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F6_E2M3": ("float6_e2m3", 6),
    "F6_E3M2": ("float6_e3m2", 6),
    "F4": ("float4_e2m1", 4),
}

BITS: dict[str, int] = {name: bits for name, bits in SAFETENSORS_DTYPES.values()}
BITS.update({"complex128": 128})

# Canonical name -> safetensors code, for writers.
TO_SAFETENSORS: dict[str, str] = {name: code for code, (name, _) in SAFETENSORS_DTYPES.items()}

# Short words users type on the command line.
ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}


def canonical(dtype: object) -> str:
    """'torch.bfloat16', 'bf16', 'BF16' and torch.bfloat16 all become 'bfloat16'."""
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch.") :]
    if text in SAFETENSORS_DTYPES:
        return SAFETENSORS_DTYPES[text][0]
    return ALIASES.get(text.lower(), text)


def nbytes(dtype: str, numel: int) -> int | None:
    """Bytes for numel elements; None when the dtype's size is unknown."""
    bits = BITS.get(dtype)
    if bits is None:
        return None
    return (numel * bits + 7) // 8


def short(dtype: str) -> str:
    """Compact display form: bfloat16 -> bf16, float32 -> fp32."""
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}.get(dtype, dtype)
