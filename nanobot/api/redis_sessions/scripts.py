"""The Lua scripts of :class:`~nanobot.api.redis_sessions.RedisSessions`: each step of a turn is
one atomic script (see the package docstring for the keys and the design)."""

from __future__ import annotations

#: What the scripts return: the ticket holds the session, was refused (queue full), or had
#: been given up (tombstone). Any other positive number: wait, re-checking within that many ms.
HELD, REFUSED, GONE = 0, -1, -2


PRELUDE = """
local P = ARGV[1]
local function worker(t) return string.match(t, '^[^:]+') end
local function lease(t) return P .. ':w:' .. worker(t) end
local function alive(t) return redis.call('sismember', lease(t), t) == 1 end
local function fenced(window)
  if redis.call('exists', P .. ':epoch') == 0 then
    redis.call('set', P .. ':epoch', '1')
    redis.call('set', P .. ':fence', '1', 'px', window)
    return true
  end
  return redis.call('exists', P .. ':fence') == 1
end
local function settle(q, me, changed, fence, ttl)
  local head = redis.call('lindex', q, 0)
  while head and not alive(head) do
    redis.call('lpop', q)
    changed = true
    head = redis.call('lindex', q, 0)
  end
  if changed and head and head ~= me and not fence then
    local k = P .. ':wake:' .. worker(head)
    redis.call('rpush', k, head)
    redis.call('pexpire', k, ttl)
  end
  return head
end
local WAIT = 3600000
"""

#: KEYS: queue. ARGV: prefix, ticket, lease ms, max waiting, fence ms, ttl ms. A ticket already
#: queued (a retried call) is not queued again.
ENTER = (
    PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[6]
if redis.call('exists', P .. ':x:' .. t) == 1 then return -2 end
redis.call('sadd', lease(t), t)
redis.call('pexpire', lease(t), ARGV[3])
local fence = fenced(ARGV[5])
settle(q, t, false, fence, ttl)
local pos = redis.call('lpos', q, t)
if pos then
  if pos > 0 then return WAIT end
  if fence then return redis.call('pttl', P .. ':fence') + 1 end
  return 0
end
local queued = redis.call('llen', q)
if queued > tonumber(ARGV[4]) then return -1 end
redis.call('rpush', q, t)
redis.call('pexpire', q, ttl)
if queued > 0 then return WAIT end
if fence then return redis.call('pttl', P .. ':fence') + 1 end
return 0
"""
)

#: KEYS: queue. ARGV: prefix, ticket, fence ms, ttl ms, lease ms. A ticket no longer queued
#: (removed as dead, or Redis lost its data) is queued again at the tail.
CHECK = (
    PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[4]
if redis.call('exists', P .. ':x:' .. t) == 1 then return -2 end
redis.call('sadd', lease(t), t)
redis.call('pexpire', lease(t), ARGV[5])
local fence = fenced(ARGV[3])
local head = settle(q, t, false, fence, ttl)
if head ~= t and not redis.call('lpos', q, t) then
  redis.call('rpush', q, t)
  if not head then head = t end
end
redis.call('pexpire', q, ttl)
if head ~= t then return WAIT end
if fence then return redis.call('pttl', P .. ':fence') + 1 end
return 0
"""
)

#: KEYS: worker lease, then the queue of each held ticket. ARGV: prefix, lease ms, fence ms,
#: ttl ms, the last ticket number issued, then the held tickets, then the other live ones.
#: The lease becomes exactly the live tickets (tickets issued after the call was sent are left
#: alone), so one the worker forgot (a stale snapshot restored it) is dead from now on.
#: Returns the tickets that no longer hold their session. A ticket missing from its queue goes
#: back to the head when the queue is empty or Redis just lost its data (the fence stands:
#: nobody else can have started).
RENEW = (
    PRELUDE
    + """
local issued, live = tonumber(ARGV[5]), {}
for i = 6, #ARGV do live[ARGV[i]] = true end
for _, m in ipairs(redis.call('smembers', KEYS[1])) do
  if not live[m] and tonumber(string.match(m, ':(%x+)$'), 16) <= issued then
    redis.call('srem', KEYS[1], m)
  end
end
for i = 6, #ARGV do redis.call('sadd', KEYS[1], ARGV[i]) end
redis.call('pexpire', KEYS[1], ARGV[2])
local fence = fenced(ARGV[3])
local lost = {}
for i = 2, #KEYS do
  local q, t = KEYS[i], ARGV[i + 4]
  local head = redis.call('lindex', q, 0)
  if head ~= t then
    if not head or (fence and not redis.call('lpos', q, t)) then
      redis.call('lpush', q, t)
    else
      lost[#lost + 1] = t
    end
  end
  redis.call('pexpire', q, ARGV[4])
end
return lost
"""
)

#: KEYS: queue. ARGV: prefix, ticket, tombstone ("1" or "0"), fence ms, ttl ms.
RELEASE = (
    PRELUDE
    + """
local q, t, ttl = KEYS[1], ARGV[2], ARGV[5]
if ARGV[3] == '1' then redis.call('set', P .. ':x:' .. t, '1', 'px', ttl) end
redis.call('srem', lease(t), t)
local fence = fenced(ARGV[4])
if redis.call('lindex', q, 0) == t then
  redis.call('lpop', q)
  settle(q, t, true, fence, ttl)
  return 1
end
return redis.call('lrem', q, 1, t)
"""
)


#: ARGV: prefix, fence ms (0: none). A worker's first contact: writes the epoch if it is missing,
#: with a fence of that length. Its presence in the script cache marks a Redis the fleet used.
OPEN = """
local P = ARGV[1]
if redis.call('exists', P .. ':epoch') == 1 then return 0 end
redis.call('set', P .. ':epoch', '1')
local window = tonumber(ARGV[2])
if window > 0 then redis.call('set', P .. ':fence', '1', 'px', window) end
return window
"""


def open_script(prefix: str) -> str:
    """The fleet's marker script: :data:`OPEN` with the prefix in a comment (one per fleet)."""
    return f"{OPEN}-- fleet {prefix.encode().hex()}\n"


def first_fence(lease: float, uptime: float, marked: bool) -> float:
    """Seconds to fence when a worker's first contact finds no epoch (see the module docstring):
    ``lease / 2`` after a flush (``marked``), else until Redis is ``lease / 2`` s old."""
    return lease / 2 if marked else max(0.0, lease / 2 - uptime)
