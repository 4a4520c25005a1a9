"""The seed's 4-step universal checkpointing proof on a tiny GPT, with real DeepSpeed."""
