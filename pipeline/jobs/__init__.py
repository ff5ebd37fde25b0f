"""Render jobs: the wire schema (``wire``), the job queues (``queue``: memory, RabbitMQ), the
render worker (``worker``) and the clip renderer it runs (``render``)."""
