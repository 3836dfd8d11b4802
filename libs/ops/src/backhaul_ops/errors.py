"""Failures the operator can act on; the CLI prints their message and exits with 1."""


class OpsError(Exception):
    """Something the operator must know about: a missing topic, a refused request."""


class TopicNotFound(OpsError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic} does not exist on the broker")
        self.topic = topic
