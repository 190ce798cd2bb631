import SwitchyardRedis

/// The Lua scripts that make each queue transition atomic.
///
/// Stream entries carry the fields `id`, `attempt`, `max`, `batch`, `model` and `job` (the job's
/// JSON), so scripts can route, count and dead-letter without decoding JSON. Delayed-set members are the
/// same fields joined by the ASCII unit separator (31), which JSON never contains unescaped:
/// `lane \31 id \31 attempt \31 max \31 batch \31 json`.
enum QueueScripts {
    /// Lua: the `model` of a job's JSON ('' when it has none or the JSON is broken). Decoding is
    /// the expensive part of routing by model, so lanes carry the model as a field of its own and
    /// this runs once per copy that lacks it (promoted retries, requeued dead letters).
    static let modelOfJSON = """
        local function modelOf(json)
          local ok, job = pcall(cjson.decode, json)
          if ok and type(job) == 'table' and type(job['model']) == 'string' then return job['model'] end
          return ''
        end

        """

    /// Push up to `Push.jobsPerCall` jobs in one call: one script call per many jobs, since a
    /// call's own cost in Redis (about 20 µs) was most of a push's.
    /// KEYS: the lanes in order, delayed, stats, batches index.
    /// ARGV: now ms, result ttl s, idempotency ttl s, then per job: id, json, max, model, lane
    /// (the index of its lane in KEYS), extra: '' for a job due now with no batch and no
    /// idempotency key, else batch, idempotency key, due ms and the delayed-set member ('' when
    /// due now) joined by the unit separator (31; none of them but the last may hold one).
    /// A job's keys (record, result, idempotency, batch, batch jobs) are named by the script from
    /// the queue's prefix and the job's id, so they share the queue's slot: every argument costs
    /// Redis about half a microsecond, and most jobs need only two of the five keys.
    /// Every key about a job lives until its result could have expired: its TTL is counted from
    /// its due time, so a job delayed for days keeps its idempotency key, batch and record until
    /// it runs and its result's TTL has passed.
    /// Returns {flags, existing ids...}: flags has one character per job in order, `1` queued,
    /// `0` a duplicate idempotency key (its existing id follows, in order), `2` a job with this id
    /// was pushed already (its record or its result lives): nothing is queued or counted twice.
    /// `pushed` is counted once per call, at the end. A job that cannot be queued (its lane is a
    /// key of the wrong type) fails the call: the jobs before it stay queued and counted, and its
    /// own record and idempotency key are removed, so pushing it again is safe.
    /// Cost: the results of a call are checked with one `EXISTS` (none live, as a rule), and a
    /// job without an idempotency key claims its record with `SET NX`, which is the duplicate
    /// check too: one command per queued job besides its `XADD`, not two, and one `EXISTS` per call.
    static let push = RedisScript(
        keyPrefix + """
            if slotMigrating(KEYS[4]) then return redis.error_reply(migratingReply) end
            local now, resultTTL, idemTTL = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
            local n = (#ARGV - 3) / 6
            local prefix = prefixOf(KEYS[4])
            local flags, existingIDs, pushed = {}, {}, 0
            -- Each job's result key, and its extra parsed before anything is written.
            local results, extras = {}, {}
            for j = 1, n do
              local a = 3 + (j - 1) * 6
              results[j] = prefix .. 'result:' .. ARGV[a + 1]
              if ARGV[a + 6] ~= '' then
                local batch, idem, due, member = string.match(ARGV[a + 6], '^([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31(.*)$')
                if not batch or not tonumber(due) then return redis.error_reply('ERR push: job ' .. j .. ' of the call has a malformed extra argument') end
                extras[j] = {batch, idem, tonumber(due), member}
              end
            end
            -- Whether any job's result lives: then each is asked on its own.
            local someFinal = n > 0 and redis.call('EXISTS', unpack(results)) > 0
            for j = 1, n do
              local a = 3 + (j - 1) * 6
              local id, json, max, model, lane = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], KEYS[tonumber(ARGV[a + 5])]
              local batch, idem, due, member = '', '', now, ''
              if extras[j] then batch, idem, due, member = unpack(extras[j]) end
              local record = prefix .. 'job:' .. id
              local idemKey = idem ~= '' and prefix .. 'idem:' .. idem
              local wait = 0
              if due > now then wait = math.ceil((due - now) / 1000) end
              local ttl = resultTTL + wait
              local flag = '1'
              if someFinal and redis.call('EXISTS', results[j]) == 1 then
                flag = '2'
              elseif idem == '' then
                if not redis.call('SET', record, batch, 'NX', 'EX', ttl) then flag = '2' end
              elseif redis.call('EXISTS', record) == 1 then
                flag = '2'
              else
                local existing = redis.call('GET', idemKey)
                if existing then
                  flag = '0'
                  existingIDs[#existingIDs + 1] = existing
                else
                  redis.call('SET', idemKey, id, 'EX', idemTTL + wait)
                  redis.call('SET', record, batch, 'EX', ttl)
                end
              end
              if flag == '1' then
                local queued
                if member ~= '' then
                  queued = redis.pcall('ZADD', KEYS[4], due, member)
                else
                  queued = redis.pcall('XADD', lane, '*', 'id', id, 'attempt', '1', 'max', max, 'batch', batch, 'model', model, 'job', json)
                end
                -- Not queued (a lane of the wrong type): the job's record and idempotency key go
                -- again, so pushing it once more queues it rather than calling it a duplicate.
                if type(queued) == 'table' and queued.err then
                  redis.call('DEL', record)
                  if idem ~= '' then redis.call('DEL', idemKey) end
                  if pushed > 0 then redis.call('HINCRBY', KEYS[5], 'pushed', pushed) end
                  return redis.error_reply(queued.err)
                end
                if batch ~= '' then
                  local batchKey, batchJobs = prefix .. 'batch:' .. batch, prefix .. 'batchjobs:' .. batch
                  if redis.call('HINCRBY', batchKey, 'total', 1) == 1 then
                    -- A new batch: listed for `switchyard batches`, the newest 10,000 kept.
                    redis.call('ZADD', KEYS[6], 'NX', now, batch)
                    redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -10001)
                  end
                  redis.call('RPUSH', batchJobs, id)
                  -- The batch lives as long as its longest-lived job: a TTL is raised, never lowered.
                  for _, key in ipairs({batchKey, batchJobs}) do
                    if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
                  end
                end
                pushed = pushed + 1
              end
              flags[j] = flag
            end
            if pushed > 0 then redis.call('HINCRBY', KEYS[5], 'pushed', pushed) end
            return {table.concat(flags), unpack(existingIDs)}
            """
    )

    /// Lua: `paused` maps the names of the paused lanes (and `*` for the whole queue) to true,
    /// from the paused hash, KEYS[1]; `laneNames` are the lane names in order (ARGV after
    /// `firstLaneName`).
    /// Lua: `prefixOf(key)` is the queue's key prefix (`sy:{q}:`) cut from one of its keys. A
    /// script builds the keys it finds only while running (`result:<id>` for an id read from a
    /// stream entry, `warm:<model>` for a job's model) from a key in `KEYS`, never from an
    /// argument, so they share its hash tag and slot; the scripts that need it put the prefix at
    /// its old place in ARGV.
    ///
    /// `slotMigrating(key)`: whether the queue's slot is being migrated away from this Redis
    /// Cluster node. Such a key, absent here, may already be on the other node, and a command on
    /// it would fail inside the script after its first writes; so these scripts check first (an
    /// `EXISTS` of a key that never exists errors in a migrating slot) and answer `TRYAGAIN`
    /// before writing anything. The client waits and calls again; once the slot has moved, the
    /// call goes to the new node. Always false on a single server.
    static let keyPrefix = """
        local function prefixOf(key) return string.match(key, '^(.-}:)') end
        local function slotMigrating(key)
          local r = redis.pcall('EXISTS', prefixOf(key) .. '~slot-probe')
          return type(r) == 'table' and r.err ~= nil
        end
        local migratingReply = 'TRYAGAIN the queue slot is being migrated; try again'

        """

    /// Lua: `deliveryOf(lane index, entry id, fields)` is an entry as a take returns it. An entry
    /// in the push's own layout (id, attempt, max, batch, model, job) goes as {lane index, entry
    /// id, id, attempt, max, batch, job}: half the strings of {lane index, entry id, fields}, and
    /// turning Lua strings into a reply is most of what a take costs Redis. Any other entry goes
    /// whole.
    static let deliveryOf = """
        local function deliveryOf(i, entry, f)
          if #f == 12 and f[1] == 'id' and f[3] == 'attempt' and f[5] == 'max' and f[7] == 'batch' and f[9] == 'model' and f[11] == 'job' then
            return {i, entry, f[2], f[4], f[6], f[8], f[12]}
          end
          return {i, entry, f}
        end

        """

    static let pausedLanes = """
        local pausedFields = redis.call('HKEYS', KEYS[1])
        local paused = {}
        for _, name in ipairs(pausedFields) do paused[name] = true end
        local function isPaused(laneName) return paused['*'] == true or paused[laneName] == true end

        """

    /// Take up to COUNT new entries, lanes in priority order, skipping (and acknowledging) entries
    /// whose job already has a final result, for example a cancelled one. Paused lanes are
    /// skipped.
    /// KEYS: paused, then the lanes in order. ARGV: group, consumer, count, then the lane names in
    /// order.
    /// Returns {{delivery (`deliveryOf`), ...}, {paused lane names (and '*')}}.
    static let take = RedisScript(
        keyPrefix + deliveryOf + pausedLanes + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 4, prefixOf(KEYS[1]))
            local out = {}
            local want = tonumber(ARGV[3])
            for i = 1, #KEYS - 1 do
              local lane = KEYS[i + 1]
              if want <= 0 then break end
              -- (Lua 5.1 has no goto: the lane's work is wrapped in an if.)
              if not isPaused(ARGV[4 + i]) then
              local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', want, 'STREAMS', lane, '>')
              if r then
                local ids, resultKeys = {}, {}
                for n, e in ipairs(r[1][2]) do
                  local f = e[2]
                  for k = 1, #f, 2 do if f[k] == 'id' then ids[n] = f[k + 1] end end
                  if ids[n] then resultKeys[#resultKeys + 1] = ARGV[4] .. 'result:' .. ids[n] end
                end
                -- One EXISTS for all (in chunks: Lua's stack holds at most 8,000 values): as a rule
                -- no result lives, and only then is each asked.
                local someFinal = false
                for c = 1, #resultKeys, 500 do
                  if not someFinal and redis.call('EXISTS', unpack(resultKeys, c, math.min(c + 499, #resultKeys))) > 0 then someFinal = true end
                end
                for n, e in ipairs(r[1][2]) do
                  local id = ids[n]
                  if someFinal and id and redis.call('EXISTS', ARGV[4] .. 'result:' .. id) == 1 then
                    redis.call('XACK', lane, ARGV[1], e[1])
                    redis.call('XDEL', lane, e[1])
                  else
                    out[#out + 1] = deliveryOf(i, e[1], e[2])
                    want = want - 1
                  end
                end
              end
              end
            end
            return {out, pausedFields}
            """
    )

    /// Take with warm-model routing. Candidates per lane are the entries parked earlier (pending
    /// for the parked consumer, oldest first) topped up with new entries read as that consumer, up
    /// to a lookahead. A candidate is warm (no model, or a model warm here), away (its model is
    /// warm on another live worker, and it has waited less than the longest wait: it stays parked
    /// for that worker) or cold (anyone may load its model). Taken, up to COUNT: candidates of
    /// one other model that have waited longer than the oldest warm one by more than the starve
    /// gap (its model claimed); then warm ones; then the cold ones of one model, the oldest's, whose model this worker
    /// claims; and a worker that found nothing else shares a model whose away backlog exceeds
    /// `share after` jobs per worker holding it. No more models run at once than the cache holds
    /// (counting those of running jobs and those this take starts): a worker whose running jobs
    /// fill its cache takes only their models' jobs, and none of those while a job of another
    /// model starves (it drains).
    /// Lanes are visited in priority order; paused ones are skipped. Final entries (cancelled) are
    /// dropped on the way. Slots: no more jobs of a model are taken than the worker has free slots
    /// for it (a warm model's free slots; all of a server's slots for a model it starts); the rest
    /// stay parked.
    /// KEYS: paused, then the lanes in order. ARGV: group, consumer, count, parked consumer, lookahead,
    /// longest wait ms, now ms, warm claim expiry ms, model cache size, share after (0: never),
    /// busy (how many of the warm models, from the first, have jobs running here), starve gap ms,
    /// slots per server (0: no
    /// limit), then n, n warm models (most recently used first) and their n free slot counts (-1:
    /// no limit), then m and m models no longer warm here
    /// (`QueueScripts.TakeWarm` builds them), then the lane names in order.
    /// Returns {{delivery (`deliveryOf`), ...}, {last entry id per lane}, wake in ms or -1,
    /// model claimed or '', {paused lane names (and '*')}}.
    static let takeWarm = RedisScript(
        keyPrefix + deliveryOf + modelOfJSON + pausedLanes + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 4, prefixOf(KEYS[1]))
            local group, me, want, prefix, parked = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
            local lookahead, maxWait, now, expiry = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
            local cacheSize, shareAfter, busy, starveGap = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
            local slots, nWarm = tonumber(ARGV[14]), tonumber(ARGV[15])
            -- room[m]: jobs for model m this take may still start (its free slots); no entry: no limit.
            local mine, order, room = {}, {}, {}
            for i = 1, nWarm do
              local m = ARGV[15 + i]
              mine[m] = true
              order[#order + 1] = m
              local free = tonumber(ARGV[15 + nWarm + i])
              if free >= 0 then room[m] = free end
              redis.call('ZADD', prefix .. 'warm:' .. m, expiry, me)
            end
            local nReleased = tonumber(ARGV[16 + 2 * nWarm])
            for i = 17 + 2 * nWarm, 16 + 2 * nWarm + nReleased do redis.call('ZREM', prefix .. 'warm:' .. ARGV[i], me) end
            local firstLaneName = 17 + 2 * nWarm + nReleased
            local function hasRoom(m) return m == nil or room[m] == nil or room[m] > 0 end
            -- active[m]: m has jobs running here, from before (the first `busy` warm models) or
            -- started by this take. No more models run at once than the cache holds: a job for
            -- another model would wait for one to end, and two models started side by side in
            -- a cache of one would evict each other.
            local active, nActive = {}, math.min(busy, nWarm)
            for i = 1, nActive do active[order[i]] = true end
            local function canStart(m) return m == nil or active[m] or nActive < cacheSize end
            -- A model this worker starts now gets a server of its own: all its slots are free.
            local function fresh(m) if slots > 0 and room[m] == nil then room[m] = slots end end
            -- Routing workers are alive: the reclaim keeps parked entries in place rather than hand them back.
            redis.call('SET', prefix .. 'routing', me, 'PX', math.max(1, tonumber(expiry) - now))
            local elsewhere = {}
            -- How many other live workers hold m warm (claims that ran out are dropped on the way).
            local function warmElsewhere(m)
              if elsewhere[m] == nil then
                local key = prefix .. 'warm:' .. m
                redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
                local n = 0
                for _, w in ipairs(redis.call('ZRANGE', key, 0, -1)) do if w ~= me then n = n + 1 end end
                elsewhere[m] = n
              end
              return elsewhere[m]
            end
            local out, wake, claimed = {}, -1, ''
            -- How long ago an entry was added, from its id (the server's clock). The starve test
            -- uses it rather than the parked time, which the reclaim resets.
            local time = redis.call('TIME')
            local serverMs = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
            local function queuedFor(entry) return serverMs - (tonumber(string.match(entry, '^(%d+)')) or serverMs) end
            for i = 1, #KEYS - 1 do
              local lane = KEYS[i + 1]
              if want <= 0 then break end
              if not isPaused(ARGV[firstLaneName + i - 1]) then
              local warm, cold, away, others = {}, {}, {}, {}
              local oldestWarm, oldestOther = nil, nil
              -- A candidate of another model has waited longer than the oldest warm one by more
              -- than the gap (see the starving step below).
              local function starving() return oldestWarm ~= nil and oldestOther ~= nil and oldestOther > oldestWarm + starveGap end
              -- Warm candidates found so far that this take can start (their model's free slots
              -- and the cache's room counted). Once they cover the free slots, the candidates after
              -- them cannot change what is taken: each is younger than every warm one found, so
              -- none is starving, and with the warm ones filling the take no cold or shared step
              -- runs. The look stops there, so a take costs what it takes, not the lookahead;
              -- unless a starving candidate, read first as it is older, will take a cache slot.
              local startable, startableFree, left = 0, 0, {}
              local counted, nCounted = {}, nActive
              local function noteOther(c) if oldestOther == nil or queuedFor(c[1]) > oldestOther then oldestOther = queuedFor(c[1]) end end
              -- A worker that drains (below) takes only the jobs without a model.
              local function draining() return claimed == '' and nActive >= cacheSize and starving() end
              local function lookDone()
                if claimed == '' and nActive < cacheSize and starving() then return false end
                return (draining() and startableFree or startable) >= want
              end
              local function consider(c)
                local id, model, json = nil, nil, nil
                local f = c[2]
                for k = 1, #f, 2 do
                  if f[k] == 'id' then id = f[k + 1] end
                  if f[k] == 'model' then model = f[k + 1] end
                  if f[k] == 'job' then json = f[k + 1] end
                end
                -- Entries written by older versions or other producers lack the field: decode.
                if model == nil and json then model = modelOf(json) end
                if model == '' then model = nil end
                c[4] = model
                if id and redis.call('EXISTS', prefix .. 'result:' .. id) == 1 then
                  redis.call('XACK', lane, group, c[1])
                  redis.call('XDEL', lane, c[1])
                elseif model == nil or mine[model] then
                  warm[#warm + 1] = c
                  if oldestWarm == nil or queuedFor(c[1]) > oldestWarm then oldestWarm = queuedFor(c[1]) end
                  local ok = model == nil or room[model] == nil or (left[model] or room[model]) > 0
                  if ok and model ~= nil and not active[model] and not counted[model] then
                    ok = nCounted < cacheSize
                    if ok then counted[model], nCounted = true, nCounted + 1 end
                  end
                  if ok then
                    if model ~= nil and room[model] ~= nil then left[model] = (left[model] or room[model]) - 1 end
                    startable = startable + 1
                    if model == nil then startableFree = startableFree + 1 end
                  end
                elseif c[3] < maxWait and warmElsewhere(model) > 0 then
                  if wake < 0 or maxWait - c[3] < wake then wake = maxWait - c[3] end
                  away[model] = away[model] or {}
                  table.insert(away[model], c)
                  others[#others + 1] = c
                  noteOther(c)
                else
                  -- No live worker holds it warm, or the one that does has not taken it within
                  -- the longest wait: any worker may load its model now.
                  cold[#cold + 1] = c
                  others[#others + 1] = c
                  noteOther(c)
                end
              end
              local held = redis.call('XPENDING', lane, group, '-', '+', lookahead, parked)
              for _, p in ipairs(held) do
                if lookDone() then break end
                local r = redis.call('XRANGE', lane, p[1], p[1])
                if r[1] then consider({p[1], r[1][2], tonumber(p[3])}) else redis.call('XACK', lane, group, p[1]) end
              end
              if #held < lookahead then
                local r = redis.call('XREADGROUP', 'GROUP', group, parked, 'COUNT', lookahead - #held, 'STREAMS', lane, '>')
                if r then for _, e in ipairs(r[1][2]) do if not lookDone() then consider({e[1], e[2], 0}) end end end
              end
              local function take(c)
                redis.call('XCLAIM', lane, group, me, 0, c[1], 'JUSTID')
                out[#out + 1] = deliveryOf(i, c[1], c[2])
                want = want - 1
                local m = c[4]
                if m and room[m] then room[m] = room[m] - 1 end
                if m and not active[m] then active[m], nActive = true, nActive + 1 end
              end
              -- Claim model m for this worker at once, so other workers leave its jobs to it; with a
              -- full cache the claim of the least recently used model that runs nothing goes.
              local function claim(m)
                if #order >= cacheSize then
                  for k = #order, 1, -1 do
                    if not active[order[k]] then
                      redis.call('ZREM', prefix .. 'warm:' .. order[k], me)
                      -- About to be evicted: its jobs are no longer warm here, in this lane or later ones.
                      mine[order[k]] = nil
                      break
                    end
                  end
                end
                redis.call('ZADD', prefix .. 'warm:' .. m, expiry, me)
                mine[m] = true
                claimed = m
              end
              -- No starving: a job for another model that has waited longer than the oldest warm
              -- one by more than the gap goes first (with the other starving jobs of its model), so
              -- a steady stream of warm jobs cannot hold it back for ever. Ages alone would not do:
              -- under a long queue every job is old. While running jobs fill the cache, the worker
              -- takes no more jobs of their models (drains), so a slot frees for the starving one.
              if want > 0 and nActive < cacheSize and oldestWarm and claimed == '' then
                local m = nil
                for _, c in ipairs(others) do
                  if queuedFor(c[1]) > oldestWarm + starveGap and (m == nil or c[4] == m) and want > 0 then
                    m = c[4]
                    fresh(m)
                    if hasRoom(m) then take(c) end
                  end
                end
                if m then claim(m) end
              end
              -- A warm model whose slots are all busy leaves its jobs parked: for a worker with a free
              -- slot for it, or, after the longest wait, for any worker to load it too.
              local drain = draining()
              for _, c in ipairs(warm) do
                local m = c[4]
                if want > 0 and (m == nil or (mine[m] and not drain)) and hasRoom(m) and canStart(m) then take(c) end
              end
              -- At most one cold model per take, so one worker does not start loading several.
              if want > 0 and #cold > 0 and claimed == '' and nActive < cacheSize then
                local m = cold[1][4]
                fresh(m)
                for _, c in ipairs(cold) do if want > 0 and c[4] == m and hasRoom(m) then take(c) end end
                claim(m)
              end
              -- Nothing else to do here: share the model with the longest backlog set aside for other
              -- workers, when it exceeds shareAfter jobs per worker holding it warm.
              if want > 0 and #out == 0 and claimed == '' and shareAfter > 0 and nActive < cacheSize then
                local best, most = nil, 0
                for m, list in pairs(away) do
                  if #list > warmElsewhere(m) * shareAfter and #list > most then best, most = m, #list end
                end
                if best then
                  fresh(best)
                  for _, c in ipairs(away[best]) do if want > 0 and hasRoom(best) then take(c) end end
                  claim(best)
                end
              end
              end
            end
            local last = {}
            for i = 1, #KEYS - 1 do
              local r = redis.call('XREVRANGE', KEYS[i + 1], '+', '-', 'COUNT', 1)
              last[i] = r[1] and r[1][1] or '0-0'
            end
            return {out, last, wake, claimed, pausedFields}
            """
    )

    /// Finish many jobs: write each result unless one is already final (first final result wins),
    /// count it, and acknowledge and delete the entry, all in one step. Fenced: when the reclaim
    /// has taken the entry away (the worker was cut off for longer than its lease, and the job's
    /// history records this attempt as `lease_expired`), the job is the next attempt's and this
    /// late result is dropped and reported, even when the next attempt has not finished yet. A job
    /// that asked to be announced (`Job.notify`) has its id published on the done channel, written
    /// or not (unless fenced off): either way its result key now holds its final result.
    /// A job that failed keeps what `switchyard retry` needs (`QueueKeys.failedJob`).
    /// KEYS: stats, done channel, the lanes in order.
    /// ARGV: group, ttl, number of lanes, then per job: lane index (from 1), entry id, status,
    /// result json, job id, attempt, extra: '' for a job with no batch that nobody waits for and
    /// that did not fail, else `1` to publish its id (`0` not), its batch's length, `:`, its
    /// batch, and the failed job's record ('' unless it failed).
    /// A job's keys (result, batch, failed job, attempts) are named by the script from the
    /// queue's prefix and the job's id, like the push's: every argument costs.
    /// Returns {results written, job ids whose result was fenced off...}.
    static let finish = RedisScript(
        keyPrefix + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            local written = 0
            local fenced = {}
            local lanes = tonumber(ARGV[3])
            local n = (#ARGV - 3) / 7
            local prefix = prefixOf(KEYS[1])
            -- Counted and deleted once per call, not per job: fewer commands for the same effect.
            -- A command that fails part-way (out of memory) still leaves the jobs before it whole:
            -- their counts and deletions are written before the error is raised again.
            local counts, deleted = {}, {}
            local ok, failure = pcall(function()
            for j = 0, n - 1 do
              local a = 4 + j * 7
              local lane = KEYS[2 + tonumber(ARGV[a])]
              local entry, status, json, id, attempt, extra = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
              local notify, batch, failedRecord = false, '', ''
              if extra ~= '' then
                local flag, length, rest = string.match(extra, '^(.)(%d+):(.*)$')
                notify = flag == '1'
                batch = string.sub(rest, 1, tonumber(length))
                failedRecord = string.sub(rest, tonumber(length) + 1)
              end
              -- Not pending: reclaimed, handed back, finished by a call whose reply was lost, or
              -- gone with a Redis that restarted empty. Only the reclaim fences the result off: it
              -- recorded this attempt as lease_expired when it gave the job to the next attempt.
              local pending = redis.call('XACK', lane, ARGV[1], entry) == 1
              local reclaimed = false
              if not pending then
                for _, r in ipairs(redis.call('LRANGE', prefix .. 'attempts:' .. id, -20, -1)) do
                  local ok, record = pcall(cjson.decode, r)
                  if ok and type(record) == 'table' and record['outcome'] == 'lease_expired' and tostring(record['attempt']) == attempt then
                    reclaimed = true
                  end
                end
              end
              if reclaimed then
                fenced[#fenced + 1] = id
              elseif redis.call('SET', prefix .. 'result:' .. id, json, 'NX', 'EX', ARGV[2]) then
                written = written + 1
                counts[status] = (counts[status] or 0) + 1
                if batch ~= '' then
                  local bkey = prefix .. 'batch:' .. batch
                  if redis.call('EXISTS', bkey) == 1 then redis.call('HINCRBY', bkey, status, 1) end
                end
                if failedRecord ~= '' then redis.call('SET', prefix .. 'failed:' .. id, failedRecord, 'EX', ARGV[2]) end
              end
              deleted[lane] = deleted[lane] or {}
              table.insert(deleted[lane], entry)
              if not reclaimed and notify then redis.call('PUBLISH', KEYS[2], id) end
            end
            end)
            for status, count in pairs(counts) do redis.call('HINCRBY', KEYS[1], status, count) end
            for lane, ids in pairs(deleted) do
              for i = 1, #ids, 500 do redis.call('XDEL', lane, unpack(ids, i, math.min(i + 499, #ids))) end
            end
            if not ok then error(failure) end
            local out = {written}
            for _, id in ipairs(fenced) do out[#out + 1] = id end
            return out
            """
    )

    /// Schedule a failed attempt's retry, and record the attempt in the job's history. The job's
    /// record, batch and batch list live at least until its result could expire after the retry
    /// (a long `Retry-After` must not outlive them).
    /// KEYS: lane, delayed, result key, stats, attempts, job record, batch, batch jobs.
    /// ARGV: group, entry id, due ms, delayed member, attempt record json ('' for none), history
    /// ttl s (also the least TTL of the job's keys). Returns 1 if scheduled, 0 if already final.
    static let retry = RedisScript(
        """
        -- An entry no longer pending for us was reclaimed or handed back: its next copy is in play.
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        redis.call('XDEL', KEYS[1], ARGV[2])
        if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
        if ARGV[5] ~= '' then
          redis.call('RPUSH', KEYS[5], ARGV[5])
          redis.call('EXPIRE', KEYS[5], ARGV[6])
        end
        local least = tonumber(ARGV[6])
        for k = 6, 8 do
          local ttl = redis.call('TTL', KEYS[k])
          if ttl >= 0 and ttl < least then redis.call('EXPIRE', KEYS[k], least) end
        end
        redis.call('HINCRBY', KEYS[4], 'retried', 1)
        return 1
        """
    )

    /// Dead-letter a delivered entry. KEYS: lane, dead, result key, batch key, stats.
    /// ARGV: group, entry id, reason, job json, job id, attempt, result json ('' when the id is
    /// unknown), has batch, ttl, dead max length, lane name, now ms, max, batch id.
    /// Returns 1 if dead-lettered, 0 if the job was already final.
    static let deadLetter = RedisScript(
        """
        if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
        redis.call('XDEL', KEYS[1], ARGV[2])
        if ARGV[7] ~= '' then
          if not redis.call('SET', KEYS[3], ARGV[7], 'NX', 'EX', ARGV[9]) then return 0 end
          if ARGV[8] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HINCRBY', KEYS[4], 'dead', 1) end
        end
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[10], '*', 'id', ARGV[5], 'lane', ARGV[11], 'attempt', ARGV[6],
          'max', ARGV[13], 'batch', ARGV[14], 'reason', ARGV[3], 'failed_at', ARGV[12], 'job', ARGV[4])
        redis.call('HINCRBY', KEYS[5], 'dead', 1)
        return 1
        """
    )

    /// Reclaim entries whose lease ran out (their worker is gone): each goes back on its lane as
    /// its next attempt, or to the dead-letter stream when it has no attempts left.
    /// First, entries parked by warm-model routing for longer than the release age, so they are
    /// never mistaken for lost ones: while a routing worker is alive they keep their place and
    /// their idle time is set back to the keep age (they stay overdue, so they are taken first);
    /// with none alive they go back on the lane as they are, for any worker (no attempt counted).
    /// KEYS: lane, dead, stats. ARGV: group, consumer, min idle ms, count, lane name, ttl,
    /// dead max length, now ms, parked consumer, release age ms, keep age ms, the
    /// `dead` result to write (JSON from Swift's writer; id, attempts, batch, message and finish
    /// time are filled in here). Returns {requeued, dead}.
    static let reclaim = RedisScript(
        keyPrefix + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 9, prefixOf(KEYS[1]))
            local stale = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[11], '-', '+', ARGV[4], ARGV[10])
            local routing = redis.call('EXISTS', ARGV[9] .. 'routing') == 1
            for _, p in ipairs(stale) do
              if routing then
                redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[10], 0, p[1], 'IDLE', ARGV[12], 'JUSTID')
              else
                local r = redis.call('XRANGE', KEYS[1], p[1], p[1])
                if r[1] then redis.call('XADD', KEYS[1], '*', unpack(r[1][2])) end
                redis.call('XACK', KEYS[1], ARGV[1], p[1])
                redis.call('XDEL', KEYS[1], p[1])
                redis.call('HINCRBY', KEYS[3], 'unparked', 1)
              end
            end
            local moved, dead = 0, 0
            local claimed = {}
            -- XAUTOCLAIM scans a bounded part of the pending list per call: follow its cursor.
            local cursor = '0-0'
            for _ = 1, 20 do
              local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', ARGV[4])
              for _, e in ipairs(r[2]) do claimed[#claimed + 1] = e end
              cursor = r[1]
              if cursor == '0-0' or #claimed >= tonumber(ARGV[4]) then break end
            end
            for _, e in ipairs(claimed) do
              local entry, f = e[1], e[2]
              if f then
                local h = {}
                for k = 1, #f, 2 do h[f[k]] = f[k + 1] end
                local id = h['id'] or ''
                local attempt, max = tonumber(h['attempt'] or '1') or 1, tonumber(h['max'] or '1') or 1
                if id ~= '' and redis.call('EXISTS', ARGV[9] .. 'result:' .. id) == 1 then
                  -- already final: nothing to run
                elseif attempt >= max then
                  local reason = 'lease expired on attempt ' .. attempt .. ' of ' .. max .. ' (worker lost)'
                  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'id', id, 'lane', ARGV[5], 'attempt', attempt,
                    'max', max, 'batch', h['batch'] or '', 'reason', reason, 'failed_at', ARGV[8], 'job', h['job'] or '')
                  if id ~= '' then
                    local result = cjson.decode(ARGV[13])
                    result['id'] = id
                    result['attempts'] = attempt
                    result['error']['message'] = reason
                    result['timings']['finished'] = tonumber(ARGV[8]) / 1000
                    if (h['batch'] or '') ~= '' then result['batch'] = h['batch'] end
                    result = cjson.encode(result)
                    redis.call('SET', ARGV[9] .. 'result:' .. id, result, 'NX', 'EX', ARGV[6])
                    local bkey = ARGV[9] .. 'batch:' .. (h['batch'] or '')
                    if (h['batch'] or '') ~= '' and redis.call('EXISTS', bkey) == 1 then redis.call('HINCRBY', bkey, 'dead', 1) end
                  end
                  redis.call('HINCRBY', KEYS[3], 'dead', 1)
                  dead = dead + 1
                else
                  if id ~= '' then
                    local akey = ARGV[9] .. 'attempts:' .. id
                    redis.call('RPUSH', akey, cjson.encode({attempt = attempt, outcome = 'lease_expired', finished = tonumber(ARGV[8]) / 1000,
                      error = {code = 'lease_expired', message = 'the lease ran out (worker lost or cut off from Redis); run again'}}))
                    redis.call('EXPIRE', akey, ARGV[6])
                  end
                  local copy = {'id', id, 'attempt', attempt + 1, 'max', max, 'batch', h['batch'] or ''}
                  if h['model'] then
                    copy[#copy + 1] = 'model'
                    copy[#copy + 1] = h['model']
                  end
                  copy[#copy + 1] = 'job'
                  copy[#copy + 1] = h['job'] or ''
                  redis.call('XADD', KEYS[1], '*', unpack(copy))
                  moved = moved + 1
                end
              end
              -- Only now, with its next copy safely written, let the old entry go.
              redis.call('XACK', KEYS[1], ARGV[1], entry)
              redis.call('XDEL', KEYS[1], entry)
            end
            if moved + dead > 0 then redis.call('HINCRBY', KEYS[3], 'reclaimed', moved + dead) end
            return {moved, dead}
            """
    )

    /// Move due members of the delayed set onto their lanes. KEYS: delayed.
    /// ARGV: now ms, limit. Returns {moved, next due ms or false}.
    static let promote = RedisScript(
        keyPrefix + modelOfJSON + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 3, prefixOf(KEYS[1]))
            local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
            local moved = 0
            for _, m in ipairs(due) do
              redis.call('ZREM', KEYS[1], m)
              local lane, id, attempt, max, batch, job =
                string.match(m, '^([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31(.*)$')
              if lane and redis.call('EXISTS', ARGV[3] .. 'result:' .. id) == 0 then
                redis.call('XADD', ARGV[3] .. 'lane:' .. lane, '*', 'id', id, 'attempt', attempt, 'max', max, 'batch', batch,
                  'model', modelOf(job), 'job', job)
                moved = moved + 1
              end
            end
            local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
            return {moved, nxt[2] or false}
            """
    )

    /// Hand entries back for another worker to run now, without counting an attempt (a draining
    /// worker's unfinished jobs). KEYS: lane. ARGV: group, entry ids... Returns how many.
    static let handBack = RedisScript(
        """
        local n = 0
        for i = 2, #ARGV do
          local r = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
          redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
          redis.call('XDEL', KEYS[1], ARGV[i])
          if r[1] then
            local f = r[1][2]
            redis.call('XADD', KEYS[1], '*', unpack(f))
            n = n + 1
          end
        end
        return n
        """
    )

    /// Record a worker's heartbeat, unless its id is registered to another process (another
    /// token; for entries without one, another pid or host): a second worker may have taken the
    /// id while this one was cut off from Redis.
    /// KEYS: worker entry, workers, drain request. ARGV: entry json, ttl s, now ms, worker id,
    /// pid, host, forget workers silent since (ms), force ('1': take the id over whoever holds
    /// it), token. Returns 1 when recorded, 2 when recorded and a drain request names this
    /// process's token, 0 when the id belongs to another process.
    static let heartbeat = RedisScript(
        """
        local current = redis.call('GET', KEYS[1])
        if current and ARGV[8] ~= '1' then
          local ok, entry = pcall(cjson.decode, current)
          if ok and type(entry) == 'table' then
            if type(entry['token']) == 'string' then
              if entry['token'] ~= ARGV[9] then return 0 end
            elseif tostring(entry['pid']) ~= ARGV[5] or entry['host'] ~= ARGV[6] then
              return 0
            end
          end
        end
        redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[7])
        if ARGV[9] ~= '' and redis.call('GET', KEYS[3]) == ARGV[9] then return 2 end
        return 1
        """
    )

    /// Remove a consumer from each lane's group where it holds no pending entries.
    /// KEYS: lanes. ARGV: group, consumer. Returns how many groups dropped it.
    static let dropConsumer = RedisScript(
        """
        local n = 0
        for _, lane in ipairs(KEYS) do
          local ok, pending = pcall(redis.call, 'XPENDING', lane, ARGV[1], '-', '+', 1, ARGV[2])
          if ok and #pending == 0 then
            redis.call('XGROUP', 'DELCONSUMER', lane, ARGV[1], ARGV[2])
            n = n + 1
          end
        end
        return n
        """
    )

    /// Cancel a job: write a final `cancelled` result unless it already has one, and count it in
    /// its batch (found through the job's record). The result lives at least as long as the job's
    /// record, so a delayed job cancelled now is still cancelled when its due time comes.
    /// KEYS: result key, job record, stats. ARGV: result json (without batch), ttl.
    /// Returns 1 when cancelled, 0 when the job was already final, -1 when no such job is known.
    static let cancel = RedisScript(
        keyPrefix + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 3, prefixOf(KEYS[1]))
            if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
            local batch = redis.call('GET', KEYS[2])
            if not batch then return -1 end
            local result = cjson.decode(ARGV[1])
            if batch ~= '' then result['batch'] = batch end
            local ttl = math.max(tonumber(ARGV[2]), redis.call('TTL', KEYS[2]))
            redis.call('SET', KEYS[1], cjson.encode(result), 'EX', ttl)
            redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
            if batch ~= '' and redis.call('EXISTS', ARGV[3] .. 'batch:' .. batch) == 1 then
              redis.call('HINCRBY', ARGV[3] .. 'batch:' .. batch, 'cancelled', 1)
            end
            return 1
            """
    )

    /// Put a dead letter back on its lane as a fresh job (attempt 1), clearing its `dead` result;
    /// its record lives again for the record ttl, `requeued` counts it, and the attempt that ended
    /// it goes to its history first.
    /// KEYS: dead, stats. ARGV: entry id, record ttl s, the ended attempt's record
    /// (JSON, '' for none; kept when the job's result is still `dead`). Returns the job id, or
    /// false when there is no such entry.
    static let retryDeadLetter = RedisScript(
        keyPrefix + modelOfJSON + """
            if slotMigrating(KEYS[1]) then return redis.error_reply(migratingReply) end
            table.insert(ARGV, 2, prefixOf(KEYS[1]))
            local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
            if not r[1] then return false end
            local h = {}
            local f = r[1][2]
            for k = 1, #f, 2 do h[f[k]] = f[k + 1] end
            local id, lane, batch = h['id'] or '', h['lane'] or 'default', h['batch'] or ''
            if id ~= '' then
              redis.call('DEL', ARGV[2] .. 'result:' .. id)
              local bkey = ARGV[2] .. 'batch:' .. batch
              if batch ~= '' and redis.call('EXISTS', bkey) == 1 then redis.call('HINCRBY', bkey, 'dead', -1) end
              redis.call('SET', ARGV[2] .. 'job:' .. id, batch, 'EX', ARGV[3])
              if ARGV[4] ~= '' then
                redis.call('RPUSH', ARGV[2] .. 'attempts:' .. id, ARGV[4])
                redis.call('EXPIRE', ARGV[2] .. 'attempts:' .. id, ARGV[3] + 3600)
              end
            end
            redis.call('HINCRBY', KEYS[2], 'requeued', 1)
            redis.call('XADD', ARGV[2] .. 'lane:' .. lane, '*', 'id', id, 'attempt', 1, 'max', h['max'] or '3', 'batch', batch,
              'model', modelOf(h['job'] or ''), 'job', h['job'] or '')
            redis.call('XDEL', KEYS[1], ARGV[1])
            return id
            """
    )
}
