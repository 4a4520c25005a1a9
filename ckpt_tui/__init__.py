"""ckpt-tui: browse, inspect, convert and verify DeepSpeed / Hugging Face checkpoints."""

__version__ = "0.1.0"
