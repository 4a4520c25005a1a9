"""One module per on-disk format: ``detect(path) -> bool`` and ``read(path) -> Checkpoint``.

Readers list metadata only (headers, ``param_shapes``); tensor data is read when a user asks for values.
"""
