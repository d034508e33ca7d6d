"""The Lua scripts the store runs (``Store`` registers them; key names: ``redis_keys``).

Each is one atomic step on keys of one cluster slot: a user's read and compare-and-set,
a history append, a popularity count and its log, a co-visit log entry, a model
version's promotion. The counting ones are made once per call token (``_ONCE_LUA``), so a
call sent again after a lost reply counts once.
"""

from __future__ import annotations

_LOG_CHUNK = 2000  # items per log entry (Lua's unpack takes at most ~8000 values)

# KEYS: state, seen, history. ARGV: expected ver, vec, meta, seen_max, reset (1: the seen
# set and the history start over), ttl (s, 0: none), the writer's token (``by``: a retry
# that finds its own token knows an attempt whose reply was lost wrote it), the expected
# writer's token (``*``: any; else the version and the writer must both match, which is
# what lets a process fold into its own copy of the state: ``known_users``), then
# score/member pairs.
CAS = """
local cur = redis.call('HMGET', KEYS[1], 'ver', 'by')
if (cur[1] or '0') ~= ARGV[1] then return 0 end
if ARGV[8] ~= '*' and (cur[2] or '') ~= ARGV[8] then return 0 end
redis.call('HSET', KEYS[1], 'vec', ARGV[2], 'meta', ARGV[3], 'ver', tostring(tonumber(ARGV[1]) + 1),
           'by', ARGV[7])
if ARGV[5] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
if #ARGV > 8 then
  redis.call('ZADD', KEYS[2], 'GT', unpack(ARGV, 9))
  local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
return 1
"""


# KEYS: state, seen. One user's state fields (vec, meta, ver, by) and seen set, read at one
# moment: two reads in a pipeline could straddle another writer's compare-and-set, and a
# copy kept from them (``known_users``) would pair one version with another's seen set.
READ_USER = """
return {redis.call('HMGET', KEYS[1], 'vec', 'meta', 'ver', 'by'),
        redis.call('ZRANGE', KEYS[2], 0, -1)}
"""


# KEYS: history. ARGV: keep, ttl (s, 0: none), then the entries, oldest first. The same
# call again (a retry after a lost reply) appends nothing: the list then already ends
# with its last entry (an event's entry holds its id and time, and one user's batches
# append one after another).
HISTORY = """
if redis.call('LINDEX', KEYS[1], -1) == ARGV[#ARGV] then return 2 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return 1
"""


# A call made once per token: KEYS[1] holds the token of the writer's last call on the
# key, ARGV[1] is this call's. The same call again (redis-py or the batch retrying a call
# whose reply was lost: a writer retries a call before it makes the next) returns 2 and
# changes nothing. One small key per writer and key, gone ONCE_TTL_S after its last call.
ONCE_TTL_S = 3600
_ONCE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', %d)
""" % ONCE_TTL_S

# KEYS: the writer's last token, co-visit log. ARGV: token, maxlen, then field/value pairs.
COVISIT = _ONCE_LUA + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


# Appends one entry per chunk of (item, value) pairs to the popularity log KEYS[2], each
# with the id of the entry before it under the field "" (item ids are never empty): a
# reader whose position is not that id missed entries trimmed away and reads the hash.
_LOG_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local function log(key, maxlen, order, values)
  if tonumber(maxlen) <= 0 or #order == 0 then return end
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local prev = last[1] and last[1][1] or '0-0'
  for first = 1, #order, %d do
    local entry = {'', prev}
    for n = first, math.min(first + %d - 1, #order) do
      entry[#entry + 1] = order[n]
      entry[#entry + 1] = values[order[n]]
    end
    prev = redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  end
end
""" % (_LOG_CHUNK, _LOG_CHUNK)

# KEYS: the writer's last token, popularity hash, its log. ARGV: token, half-life (s, or
# 'inf'), log maxlen (0: no log), then item/weight/ts triples. Each value is "count,ts": the decayed
# count as of ts (see model/popularity.py); the log gets each item's value after the call.
POPULARITY = _LOG_LUA + _ONCE_LUA + """
local hl = tonumber(ARGV[2])
local order, values = {}, {}
for i = 4, #ARGV, 3 do
  local item, w, t = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local cur = redis.call('HGET', KEYS[2], item)
  local v, ts = 0, t
  if cur then
    local sep = string.find(cur, ',', 1, true)
    v, ts = tonumber(string.sub(cur, 1, sep - 1)), tonumber(string.sub(cur, sep + 1))
  end
  if t >= ts then
    if hl ~= math.huge then v = v * 2 ^ (-(t - ts) / hl) end
    v, ts = v + w, t
  else
    if hl ~= math.huge then w = w * 2 ^ (-(ts - t) / hl) end
    v = v + w
  end
  local value = string.format('%.17g,%.17g', v, ts)
  redis.call('HSET', KEYS[2], item, value)
  if not values[item] then order[#order + 1] = item end
  values[item] = value
end
log(KEYS[3], ARGV[3], order, values)
return 1
"""

# KEYS: popularity hash, its log. ARGV: log maxlen (0: no log), then the items removed.
POPULARITY_REMOVE = _LOG_LUA + """
local order, values = {}, {}
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  if not values[ARGV[i]] then order[#order + 1] = ARGV[i] end
  values[ARGV[i]] = ''
end
log(KEYS[2], ARGV[1], order, values)
return 1
"""


# KEYS: current, meta, history. ARGV: version, meta JSON ('' leaves meta alone), history
# length kept, the version that must be current ('' for any), the base version (what an
# absent current means). 1 when ``version`` was made current, 0 when another was current.
PROMOTE = """
local current = redis.call('GET', KEYS[1]) or ARGV[5]
if ARGV[4] ~= '' and current ~= ARGV[4] then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
return 1
"""
