"""The one priority policy: what a viewer's flags are worth in the queue (``[priority]``).

Adapters only report flags (moderator, subscriber, VIP, bits, a channel-points redemption, a
first message); this policy turns them into the 0-9 priority the conversation answers by, and
the render jobs inherit. A viewer with several flags gets the highest of their values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.utterance import Utterance

MAX_PRIORITY = 9


@dataclass(frozen=True, kw_only=True)
class PriorityPolicy:
    """Priority (0-9, 9 answered first) per viewer flag; ``[priority]`` documents each."""

    moderator: int = 9  # moderators and the broadcaster
    bits: int = 5  # any cheer ...
    bits_per_step: int = 100  # ... plus one for each this many bits ...
    bits_max: int = 8  # ... up to this
    channel_points: int = 6
    vip: int = 4
    first_time: int = 3
    subscriber: int = 2
    everyone: int = 0

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "bits_per_step":
                if value < 1:
                    raise ValueError("priority.bits_per_step must be at least 1")
            elif not 0 <= value <= MAX_PRIORITY:
                raise ValueError(f"priority.{item.name} = {value}: expected 0-{MAX_PRIORITY}")

    def priority(self, utterance: Utterance) -> int:
        """The priority ``utterance``'s flags earn."""
        values = [self.everyone]
        if utterance.moderator or utterance.broadcaster:
            values.append(self.moderator)
        if utterance.bits > 0:
            steps = utterance.bits // self.bits_per_step
            values.append(min(max(self.bits_max, self.bits), self.bits + steps))
        if utterance.redemption:
            values.append(self.channel_points)
        if utterance.vip:
            values.append(self.vip)
        if utterance.first_time:
            values.append(self.first_time)
        if utterance.subscriber:
            values.append(self.subscriber)
        return max(values)

    def apply(self, utterance: Utterance) -> Utterance:
        """``utterance`` with the priority its flags earn (or the one it has, if higher)."""
        value = max(utterance.priority, self.priority(utterance))
        if value == utterance.priority:
            return utterance
        return dataclasses.replace(utterance, priority=value)
