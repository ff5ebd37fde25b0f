"""Pydantic validation errors as one message a streamer can act on: see
:mod:`lipcast_base.validation`."""

from __future__ import annotations

from lipcast_base.validation import describe_validation_error

__all__ = ["describe_validation_error"]
