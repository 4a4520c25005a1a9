"""Core library: no Textual, no rich. Everything the CLI and the TUI show comes from here."""
