"""The Textual app. The only package that imports Textual; it talks to ckpt_tui.core through workers."""
