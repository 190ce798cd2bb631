import SwitchyardRedis

/// The response cache's Lua scripts. KEYS of each: the entry, its lease, its completion signal
/// (a stream), which share the digest's hash tag.
enum CacheScripts {
    /// The entry if there is one; else the lease for this caller if free; else how long the
    /// lease has left and the last completion signal's id (a waiter reads signals after it).
    /// ARGV: token, lease ms. Returns {2, entry, entry ms left} | {1} | {0, lease ms left, last
    /// signal id}. A lease found without an expiry (set by hand) is given one.
    static let lease = RedisScript(
        """
        local entry = redis.call('GET', KEYS[1])
        if entry then return {2, entry, redis.call('PTTL', KEYS[1])} end
        if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
        local left = redis.call('PTTL', KEYS[2])
        if left == -1 then
          redis.call('PEXPIRE', KEYS[2], ARGV[2])
          left = tonumber(ARGV[2])
        end
        local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
        return {0, left, last[1] and last[1][1] or '0-0'}
        """
    )

    /// Store an answer and wake the waiters, if this caller's lease still holds (a late leader,
    /// whose lease ran out and went to another, is refused). ARGV: token, entry, entry ttl ms,
    /// signal ttl ms, check the lease ('1') or not ('0': a refresh). Returns 1 when stored, 0 when refused.
    static let store = RedisScript(
        """
        if ARGV[5] == '1' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        -- A refresh ends any lease too: a leader still computing cannot store an older answer over it.
        redis.call('DEL', KEYS[2])
        redis.call('XADD', KEYS[3], 'MAXLEN', '1', '*', 's', 'stored')
        redis.call('PEXPIRE', KEYS[3], ARGV[4])
        return 1
        """
    )

    /// Extend this caller's lease while it computes. ARGV: token, lease ms. Returns 1, or 0 when
    /// the lease is no longer this caller's.
    static let renew = RedisScript(
        """
        if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
        return 1
        """
    )

    /// Give a lease up without an answer (the call failed, or the answer is not kept) and wake
    /// the waiters, one of which takes the lease. ARGV: token, signal ttl ms.
    static let release = RedisScript(
        """
        if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
        redis.call('XADD', KEYS[3], 'MAXLEN', '1', '*', 's', 'released')
        redis.call('PEXPIRE', KEYS[3], ARGV[2])
        return 1
        """
    )
}

extension Duration {
    /// Whole milliseconds (at least 1), for PX and BLOCK arguments.
    var milliseconds: Int64 { max(1, components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000) }

    /// Milliseconds with their fraction, for the time a job spent in the cache.
    var inMilliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
