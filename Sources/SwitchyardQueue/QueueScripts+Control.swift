import SwitchyardCore
import SwitchyardRedis

/// Scripts an operator's commands run (`switchyard queue purge`, `switchyard retry`): never on a
/// job's hot path.
extension QueueScripts {
    /// Cancel up to COUNT jobs per lane that wait (new entries, and entries parked by warm-model
    /// routing) and up to COUNT delayed ones: each gets a final `cancelled` result (unless it
    /// has one) counted in its batch, and its entry goes. Running jobs are left alone. New
    /// entries are read as the purge consumer, which the caller removes afterwards.
    /// KEYS: stats, delayed, then the lanes. ARGV: group, purge consumer, parked consumer, count,
    /// the `cancelled` result (JSON; id and batch filled in here), result ttl s.
    /// Returns {waiting removed, parked removed, delayed removed}.
    static let purge = RedisScript(
        QueueScripts.keyPrefix + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 5, prefixOf(KEYS[1]))
            local group, prefix, n = ARGV[1], ARGV[5], tonumber(ARGV[4])
            local removed = {0, 0, 0}
            local function cancel(id, batch)
              if id == nil or id == '' then return end
              local result = cjson.decode(ARGV[6])
              result['id'] = id
              if batch ~= nil and batch ~= '' then result['batch'] = batch end
              if redis.call('SET', prefix .. 'result:' .. id, cjson.encode(result), 'NX', 'EX', ARGV[7]) then
                redis.call('HINCRBY', KEYS[1], 'cancelled', 1)
                local bkey = prefix .. 'batch:' .. (batch or '')
                if batch ~= nil and batch ~= '' and redis.call('EXISTS', bkey) == 1 then redis.call('HINCRBY', bkey, 'cancelled', 1) end
              end
            end
            local function fields(f)
              local h = {}
              for k = 1, #f, 2 do h[f[k]] = f[k + 1] end
              return h
            end
            for i = 3, #KEYS do
              local lane = KEYS[i]
              if redis.call('EXISTS', lane) == 1 then
                local r = redis.call('XREADGROUP', 'GROUP', group, ARGV[2], 'COUNT', n, 'STREAMS', lane, '>')
                if r then
                  for _, e in ipairs(r[1][2]) do
                    local h = fields(e[2])
                    cancel(h['id'], h['batch'])
                    redis.call('XACK', lane, group, e[1])
                    redis.call('XDEL', lane, e[1])
                    removed[1] = removed[1] + 1
                  end
                end
                for _, p in ipairs(redis.call('XPENDING', lane, group, '-', '+', n, ARGV[3])) do
                  local e = redis.call('XRANGE', lane, p[1], p[1])
                  if e[1] then
                    local h = fields(e[1][2])
                    cancel(h['id'], h['batch'])
                  end
                  redis.call('XACK', lane, group, p[1])
                  redis.call('XDEL', lane, p[1])
                  removed[2] = removed[2] + 1
                end
              end
            end
            for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, n - 1)) do
              redis.call('ZREM', KEYS[2], m)
              local _, id, _, _, batch = string.match(m, '^([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31')
              cancel(id, batch)
              removed[3] = removed[3] + 1
            end
            return removed
            """
    )

    /// Run a job that ended `failed` again: its result and failed-job record go, its batch counts
    /// it unfinished again, and it is queued on its lane as attempt 1 with the same payload.
    /// The attempt that ended it goes to its history first.
    /// KEYS: result, failed job, lane, batch, job record, stats, attempts. ARGV: the result as read
    /// (the script does nothing if it changed meanwhile), job id, batch id, lane name, record ttl
    /// s, the ended attempt's record (JSON).
    /// Returns 1 when queued, 0 when the result changed, -1 when the failed-job record is gone or
    /// names another lane.
    static let retryFailed = RedisScript(
        modelOfJSON + """
            if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
            local record = redis.call('GET', KEYS[2])
            if not record then return -1 end
            local lane, max, job = string.match(record, '^([^\\31]*)\\31([^\\31]*)\\31(.*)$')
            if lane ~= ARGV[4] then return -1 end
            redis.call('DEL', KEYS[1], KEYS[2])
            redis.call('RPUSH', KEYS[7], ARGV[6])
            redis.call('EXPIRE', KEYS[7], ARGV[5] + 3600)
            if ARGV[3] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HINCRBY', KEYS[4], 'failed', -1) end
            redis.call('XADD', KEYS[3], '*', 'id', ARGV[2], 'attempt', 1, 'max', max, 'batch', ARGV[3], 'model', modelOf(job), 'job', job)
            -- Known again while it runs: cancel and job find it.
            redis.call('SET', KEYS[5], ARGV[3], 'EX', ARGV[5])
            redis.call('HINCRBY', KEYS[6], 'requeued', 1)
            return 1
            """
    )

    /// `purge`.
    struct Purge: QueueScriptCall {
        static let script = QueueScripts.purge
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(keys k: QueueKeys, consumer: String, count: Int, result: JobResult, resultTTL: Duration) {
            keys = [k.stats, k.delayed] + k.lanes
            arguments = [QueueKeys.group, consumer, QueueKeys.parkedConsumer, count, result.encodedJSON(), resultTTL.wholeSeconds]
        }
    }

    /// `retryFailed`.
    struct RetryFailed: QueueScriptCall {
        static let script = QueueScripts.retryFailed
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(
            jobID: String,
            resultAsRead: [UInt8],
            batch: String,
            lane: JobPriority,
            keys k: QueueKeys,
            recordTTL: Duration,
            ended: AttemptRecord
        ) {
            keys = [k.result(jobID), k.failedJob(jobID), k.lane(lane), k.batch(batch), k.job(jobID), k.stats, k.attempts(jobID)]
            arguments = [resultAsRead, jobID, batch, lane.rawValue, recordTTL.wholeSeconds, ended.jsonBytes]
        }
    }
}
