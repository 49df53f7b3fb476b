"""How every producer of the pipeline writes: one fact, so that none writes less safely than the rest.

``acks=all``: the broker acknowledges a record once every in-sync replica has it, and refuses it while
fewer than the topic's ``min.insync.replicas`` are in sync; so an acknowledged dead letter, alert or
published invoice survives the loss of a broker. Idempotence: a retry after a lost acknowledgement (a
leader dying mid-request) is not written twice. ``tests/project/test_producers.py`` holds every
producer in the project code to it.
"""

from __future__ import annotations

from typing import Any, Final

DURABLE_PRODUCER: Final[dict[str, Any]] = {"acks": "all", "enable_idempotence": True}
