"""The Double-Eleven load test for running Locust by hand against a daemon you started:

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 OrderUser

The users, the load shape and the settings (RC_TOKEN, RC_DURATION, ...) are those of
`rewardcore loadtest`, which ships them in rewardcore/capacity/locustfile.py; see its
docstring and docs/capacity.md.
"""

from __future__ import annotations

from rewardcore.capacity.locustfile import BatchUser, DoubleElevenShape, OrderUser, StreamUser

__all__ = ["BatchUser", "DoubleElevenShape", "OrderUser", "StreamUser"]
