import SwitchyardRedis

/// The circuit breaker's Lua scripts. Every transition happens inside one of them, on the
/// server's clock, so workers never race each other into a state.
///
/// KEYS of each: the breaker's state hash and its sliding window hash (`ResilienceKeys`), which
/// share the target's hash tag. ARGV 1–15 are the breaker's settings
/// (`BreakerSettings.scriptArguments`), then each script's own.
///
/// State hash fields: `st` state (closed, open, half_open, forced_open, forced_closed), `g`
/// generation (bumped by every change, so an outcome from an earlier episode is ignored), `u`
/// open until (ms), `o` openings in a row, `ts` since (ms), `r` why, `f` who forced it, and the
/// half-open probe counts `pg` granted, `pok`, `pbad`, `psl` and `pt` (last grant, ms).
/// Every change is published on the changes channel as JSON: `t` target, `s` state, `g`, `u`,
/// `n` the server's time (ms), `m` the same in µs (a string), `r`, `f`, `o`.
enum BreakerScripts {
    static let prelude = """
        local S, W = KEYS[1], KEYS[2]
        local kind, size, minc = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
        local fthr, sthr = tonumber(ARGV[4]), tonumber(ARGV[5])
        local wait, mult, maxw, jitter = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
        local probes, lease, rnd, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
        local channel, target = ARGV[14], ARGV[15]
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local function num(x) return tonumber(x or '0') or 0 end
        local function load()
          local v = redis.call('HMGET', S, 'st', 'g', 'u', 'o', 'ts', 'r', 'f', 'pg', 'pok', 'pbad', 'psl', 'pt')
          return {lost = not v[1], st = v[1] or 'closed', g = num(v[2]), u = num(v[3]), o = num(v[4]), ts = num(v[5]), r = v[6] or '',
                  f = v[7] or '', pg = num(v[8]), pok = num(v[9]), pbad = num(v[10]), psl = num(v[11]), pt = num(v[12])}
        end
        local function keep(b)
          if b.st == 'forced_open' or b.st == 'forced_closed' then
            redis.call('PERSIST', S)
          else
            redis.call('PEXPIRE', S, ttl)
          end
          redis.call('PEXPIRE', W, ttl)
        end
        local function publish(b)
          redis.call('PUBLISH', channel, cjson.encode({t = target, s = b.st, g = b.g, u = b.u, n = now, m = t[1] .. string.format('%06d', tonumber(t[2])), r = b.r, f = b.f, o = b.o}))
        end
        local function set_state(b, st, reason, untilms)
          -- A generation is at least the time in ms, so one made after the hash was lost (expired,
          -- flushed) is still later than any a worker's copy holds.
          b.st, b.g, b.ts, b.r, b.u = st, math.max(b.g + 1, now), now, reason, untilms
          b.pg, b.pok, b.pbad, b.psl, b.pt = 0, 0, 0, 0, 0
          redis.call('HSET', S, 'st', st, 'g', b.g, 'u', untilms, 'o', b.o, 'ts', now, 'r', reason, 'f', b.f,
            'pg', 0, 'pok', 0, 'pbad', 0, 'psl', 0, 'pt', 0)
          -- Transitions into each state, counted once for the cluster where they are decided.
          redis.call('HINCRBY', S, 'n_' .. st, 1)
          keep(b)
          publish(b)
        end
        -- Window totals {calls, failures, slow}; a time window first drops the seconds that left it.
        -- A window of another shape (`ks`: a worker with other settings) is started afresh when
        -- `mutate`; a read only reports its totals.
        local shape = kind .. ':' .. size
        local function totals(mutate)
          local ks = redis.call('HGET', W, 'ks')
          if ks ~= shape then
            if ks and not mutate then
              local o = redis.call('HMGET', W, 'c', 'fl', 'sl')
              return num(o[1]), num(o[2]), num(o[3])
            end
            if ks then redis.call('DEL', W) end
            if mutate then redis.call('HSET', W, 'ks', shape) end
          end
          if kind == 'time' then
            local sec = math.floor(now / 1000)
            local v = redis.call('HMGET', W, 'hd', 'c', 'fl', 'sl')
            if not v[1] then
              redis.call('HSET', W, 'hd', sec)
              return num(v[2]), num(v[3]), num(v[4])
            end
            local hd, c, fl, sl = num(v[1]), num(v[2]), num(v[3]), num(v[4])
            if sec <= hd then return c, fl, sl end
            if sec - hd >= size then
              redis.call('DEL', W)
              redis.call('HSET', W, 'hd', sec)
              return 0, 0, 0
            end
            for i = hd + 1, sec do
              local k = i % size
              local bv = redis.call('HMGET', W, 'c' .. k, 'f' .. k, 's' .. k)
              c, fl, sl = c - num(bv[1]), fl - num(bv[2]), sl - num(bv[3])
              redis.call('HDEL', W, 'c' .. k, 'f' .. k, 's' .. k)
            end
            redis.call('HSET', W, 'hd', sec, 'c', c, 'fl', fl, 'sl', sl)
            return c, fl, sl
          end
          local v = redis.call('HMGET', W, 'c', 'fl', 'sl')
          return num(v[1]), num(v[2]), num(v[3])
        end
        -- Adds one outcome (0 ok, 1 failed, 2 slow, 3 slow and failed) and returns the new totals.
        local function add(code)
          local fail = (code == 1 or code == 3) and 1 or 0
          local slow = code >= 2 and 1 or 0
          local c, fl, sl = totals(true)
          if kind == 'time' then
            local k = math.floor(now / 1000) % size
            redis.call('HINCRBY', W, 'c' .. k, 1)
            if fail == 1 then redis.call('HINCRBY', W, 'f' .. k, 1) end
            if slow == 1 then redis.call('HINCRBY', W, 's' .. k, 1) end
          else
            local i = num(redis.call('HGET', W, 'wi'))
            local old = redis.call('HGET', W, 'w' .. i)
            if old then
              old = tonumber(old)
              c = c - 1
              if old == 1 or old == 3 then fl = fl - 1 end
              if old >= 2 then sl = sl - 1 end
            end
            redis.call('HSET', W, 'w' .. i, code, 'wi', (i + 1) % size)
          end
          c, fl, sl = c + 1, fl + fail, sl + slow
          redis.call('HSET', W, 'c', c, 'fl', fl, 'sl', sl)
          return c, fl, sl
        end
        -- Opens the breaker for a wait that grows with each opening in a row (with jitter,
        -- capped), and at least `at_least` ms.
        local function trip(b, reason, at_least)
          b.o = b.o + 1
          local w = math.floor(wait * (mult ^ (b.o - 1)) * (1 - jitter + 2 * jitter * rnd))
          if w > maxw then w = maxw end
          if at_least > w then w = at_least end
          redis.call('DEL', W)
          set_state(b, 'open', reason, now + w)
        end
        local function close(b, reason)
          b.o = 0
          redis.call('DEL', W)
          set_state(b, 'closed', reason, 0)
        end

        """

    /// Records one call's outcome. ARGV 16–19: the generation the call was admitted under (-1:
    /// unknown, counts only while closed), outcome code (-1: abandoned, which only gives a
    /// probe's grant back), '1' for a half-open probe, Retry-After ms (0: none). Returns {state, generation, open until ms, now ms}.
    static let record = RedisScript(
        prelude + """
            local gen, code, probe, ra = tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18] == '1', tonumber(ARGV[19])
            local fail = code == 1 or code == 3
            local b = load()
            if code < 0 then
              -- an abandoned call: a probe's grant goes back
              if b.st == 'half_open' and probe and gen == b.g and b.pg > b.pok + b.pbad then
                b.pg = b.pg - 1
                redis.call('HSET', S, 'pg', b.pg)
                keep(b)
                -- Workers refused while every probe was out may ask again.
                publish(b)
              end
            elseif b.st == 'forced_closed' then
              if gen == b.g or gen < 0 then add(code) end
            elseif b.st == 'forced_open' then
              -- an operator holds it open
            elseif ra > 0 and fail and b.st ~= 'half_open' then
              -- The target asked to be left alone: open for that long (at most max_wait_ms),
              -- not counted as an opening in a row, and never shortened.
              if ra > maxw then ra = maxw end
              if b.st == 'open' then
                if now + ra > b.u then
                  b.g, b.u, b.r = math.max(b.g + 1, now), now + ra, 'Retry-After ' .. ra .. ' ms'
                  redis.call('HSET', S, 'g', b.g, 'u', b.u, 'r', b.r)
                  keep(b)
                  publish(b)
                end
              else
                redis.call('DEL', W)
                set_state(b, 'open', 'Retry-After ' .. ra .. ' ms', now + ra)
              end
            elseif b.st == 'closed' then
              -- Lost state (expired, flushed) counts every outcome: copies still hold older generations.
              if gen == b.g or gen < 0 or b.lost then
                local c, fl, sl = add(code)
                if c >= minc then
                  local fr, sr = fl * 100 / c, sl * 100 / c
                  if fr >= fthr then
                    trip(b, string.format('failure rate %d%% of %d calls', math.floor(fr + 0.5), c), 0)
                  elseif sr >= sthr then
                    trip(b, string.format('slow-call rate %d%% of %d calls', math.floor(sr + 0.5), c), 0)
                  else
                    keep(b)
                  end
                else
                  keep(b)
                end
              end
            elseif b.st == 'half_open' and probe and gen == b.g then
              if fail then b.pbad = b.pbad + 1 else b.pok = b.pok + 1 end
              if code >= 2 then b.psl = b.psl + 1 end
              redis.call('HSET', S, 'pok', b.pok, 'pbad', b.pbad, 'psl', b.psl)
              local done = b.pok + b.pbad
              if done >= probes then
                local fr, sr = b.pbad * 100 / done, b.psl * 100 / done
                if fr >= fthr or sr >= sthr then
                  trip(b, string.format('%d of %d probes failed, %d slow', b.pbad, done, b.psl), math.min(ra, maxw))
                else
                  close(b, string.format('%d of %d probes succeeded', b.pok, done))
                end
              end
            end
            return {b.st, b.g, b.u, now}
            """
    )

    /// Asks for a call: granted while closed; refused while open until its wait is over, then
    /// the breaker turns half-open and grants up to the configured number of probes across the
    /// cluster (a probe whose outcome never came is granted again after the probe lease).
    /// Returns {granted 0|1, state, generation, until ms (open: when it may half-open;
    /// half-open: when a lost probe may be re-granted), now ms, probe 0|1}.
    static let permit = RedisScript(
        prelude + """
            local b = load()
            if b.st == 'closed' or b.st == 'forced_closed' then return {1, b.st, b.g, 0, now, 0} end
            if b.st == 'forced_open' then return {0, b.st, b.g, 0, now, 0} end
            if b.st == 'open' then
              if now < b.u then return {0, b.st, b.g, b.u, now, 0} end
              set_state(b, 'half_open', 'open period over', 0)
            end
            if b.pg >= probes and b.pg > b.pok + b.pbad and now - b.pt >= lease then b.pg = b.pok + b.pbad end
            if b.pg < probes then
              b.pg = b.pg + 1
              redis.call('HSET', S, 'pg', b.pg, 'pt', now)
              keep(b)
              return {1, b.st, b.g, 0, now, 1}
            end
            return {0, b.st, b.g, b.pt + lease, now, 0}
            """
    )

    /// An operator's order. ARGV 16: `open` (held open until closed or reset), `close` (held
    /// closed: outcomes are counted but never trip it), `reset` (closed and automatic again,
    /// window and openings cleared); ARGV 17: who and why. Returns {state, generation, until, now}.
    static let force = RedisScript(
        prelude + """
            local action, note = ARGV[16], ARGV[17]
            local b = load()
            if action == 'open' then
              b.f = note
              set_state(b, 'forced_open', 'forced open', 0)
            elseif action == 'close' then
              b.f = note
              set_state(b, 'forced_closed', 'forced closed', 0)
            else
              b.f, b.o = '', 0
              redis.call('DEL', W)
              set_state(b, 'closed', 'reset', 0)
            end
            return {b.st, b.g, b.u, now}
            """
    )

    /// The breaker as it stands. Returns {state, generation, until, now, openings, since,
    /// reason, forced, probes granted, probes ok, probes failed, calls, failures, slow calls}.
    static let read = RedisScript(
        prelude + """
            local b = load()
            local c, fl, sl = totals(false)
            if redis.call('EXISTS', W) == 1 then redis.call('PEXPIRE', W, ttl) end
            return {b.st, b.g, b.u, now, b.o, b.ts, b.r, b.f, b.pg, b.pok, b.pbad, c, fl, sl}
            """
    )
}

/// The rate limiter's script: a GCRA (generic cell rate algorithm) per target for requests and
/// tokens, on the server's clock (µs). KEYS: the target's limit hash (fields `r` and `t`, the
/// theoretical arrival times). ARGV: mode (`take`, `settle`, `read`), request interval µs,
/// request capacity, token interval µs, token capacity, requests, tokens (for `settle`: the
/// tokens to add back, negative, or charge, positive).
enum RateLimitScripts {
    /// `take`: {1, 0} admitted (both limits charged), {0, wait µs} refused (neither charged),
    /// {-1, 0} the tokens are more than the token capacity (never admissible).
    /// `settle`: 1. `read`: {request TAT, token TAT, now} as strings (µs).
    static let limit = RedisScript(
        """
        local K = KEYS[1]
        local mode = ARGV[1]
        local ri, rc, ti, tc = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
        local rn, tn = tonumber(ARGV[6]), tonumber(ARGV[7])
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local v = redis.call('HMGET', K, 'r', 't')
        local rt, tt = tonumber(v[1] or '0') or 0, tonumber(v[2] or '0') or 0
        if mode == 'read' then
          return {string.format('%.0f', rt), string.format('%.0f', tt), string.format('%.0f', now)}
        end
        if mode == 'settle' then
          if ti > 0 and v[2] then
            -- A charge counts from now if the bucket has refilled meanwhile, as a take does.
            local nt = tn > 0 and math.max(tt, now) + tn * ti or tt + tn * ti
            redis.call('HSET', K, 't', string.format('%.3f', nt))
            if nt > now then
              local left = redis.call('PTTL', K)
              local need = math.ceil((nt - now) / 1000) + 60000
              if left >= 0 and left < need then redis.call('PEXPIRE', K, need) end
            end
          end
          return 1
        end
        local waitus, nrt, ntt = 0, nil, nil
        if ri > 0 and rn > 0 then
          nrt = math.max(rt, now) + rn * ri
          local at = nrt - rc * ri
          if at > now then waitus = at - now end
        end
        if ti > 0 and tn > 0 then
          if tn > tc then return {-1, 0} end
          ntt = math.max(tt, now) + tn * ti
          local at = ntt - tc * ti
          if at > now and at - now > waitus then waitus = at - now end
        end
        if waitus > 0 then return {0, math.ceil(waitus)} end
        local last = now
        if nrt then
          redis.call('HSET', K, 'r', string.format('%.3f', nrt))
          last = math.max(last, nrt)
        end
        if ntt then
          redis.call('HSET', K, 't', string.format('%.3f', ntt))
          last = math.max(last, ntt)
        end
        redis.call('PEXPIRE', K, math.ceil((last - now) / 1000) + 60000)
        return {1, 0}
        """
    )
}
