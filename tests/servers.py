"""Test-side name for the package's throwaway Redis servers."""

from rewardcore.redis_servers import RedisCluster, RedisServer, _cli, free_port

__all__ = ["RedisCluster", "RedisServer", "_cli", "free_port"]
