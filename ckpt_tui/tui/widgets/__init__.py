"""Widgets of the app: trees with aligned columns, fact panels, the tensor detail panel."""
