"""What every lipcast package may import: the exception tree and validation messages.

It imports nothing of the project, so the lowest packages (``personas``) use it without
importing ``pipeline``, which imports them. ``pipeline.errors`` and ``pipeline.validation``
re-export it under their long-standing names.
"""
