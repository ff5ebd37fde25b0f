"""lipcast: a talking, lip-synced AI persona for live streams (composition root and CLI)."""

__version__ = "0.1.0"
