"""Pure rendering: avatars, audio features, lip-sync renderers and video encoding.

This package imports nothing of lipcast's other packages; it takes samples and images and
returns frames and bytes.
"""
