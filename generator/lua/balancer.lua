-- scrimp's balancer for nginx's lua module (balancer_by_lua). The
-- membership of every upstream lives in the shared dict "scrimp" as the
-- JSON document scrimp renders ("data") and a counter ("version") bumped
-- after every change; each worker rebuilds its own structures when the
-- counter moves. Smooth weighted round-robin weights and passive failures
-- are per worker, as nginx keeps them for upstreams without a zone; the
-- requests in flight to each server, which least-conn and random compare,
-- are counted in the shared dict ("c:upstream/addr"), so that every worker
-- sees those of the others, as nginx's least_conn does with a zone.
local ngx = ngx
local balancer = require("ngx.balancer")
local floor, min = math.floor, math.min
local byte, sub, find, char = string.byte, string.sub, string.find, string.char
local concat, sort = table.concat, table.sort

local M = {}

-- decode parses a JSON text (objects, arrays, strings, numbers, booleans;
-- \u escapes below 0x80 only) or raises an error naming the byte.
local decode
do
  local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
  local function fail(i, what) error("json: " .. what .. " at byte " .. i, 0) end
  local function skip(s, i)
    local _, e = find(s, "^[ \t\r\n]*", i)
    return e + 1
  end
  local function str(s, i)
    local out, j = {}, i + 1
    while true do
      local a = find(s, '["\\]', j)
      if not a then fail(i, "unterminated string") end
      out[#out + 1] = sub(s, j, a - 1)
      if byte(s, a) == 34 then return concat(out), a + 1 end
      local c = sub(s, a + 1, a + 1)
      if c == "u" then
        local n = tonumber(sub(s, a + 2, a + 5), 16)
        if not n or n >= 128 then fail(a, "unsupported \\u escape") end
        out[#out + 1] = char(n)
        j = a + 6
      else
        local e = escapes[c]
        if not e then fail(a, "bad escape") end
        out[#out + 1] = e
        j = a + 2
      end
    end
  end
  local value
  value = function(s, i)
    i = skip(s, i)
    local c = sub(s, i, i)
    if c == "{" then
      local t = {}
      i = skip(s, i + 1)
      if sub(s, i, i) == "}" then return t, i + 1 end
      while true do
        if sub(s, i, i) ~= '"' then fail(i, "object key expected") end
        local k
        k, i = str(s, i)
        i = skip(s, i)
        if sub(s, i, i) ~= ":" then fail(i, "':' expected") end
        t[k], i = value(s, i + 1)
        i = skip(s, i)
        c = sub(s, i, i)
        if c == "}" then return t, i + 1 end
        if c ~= "," then fail(i, "',' or '}' expected") end
        i = skip(s, i + 1)
      end
    elseif c == "[" then
      local t = {}
      i = skip(s, i + 1)
      if sub(s, i, i) == "]" then return t, i + 1 end
      while true do
        t[#t + 1], i = value(s, i)
        i = skip(s, i)
        c = sub(s, i, i)
        if c == "]" then return t, i + 1 end
        if c ~= "," then fail(i, "',' or ']' expected") end
        i = i + 1
      end
    elseif c == '"' then
      return str(s, i)
    elseif sub(s, i, i + 3) == "true" then
      return true, i + 4
    elseif sub(s, i, i + 4) == "false" then
      return false, i + 5
    end
    local a, e = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not a then fail(i, "value expected") end
    return tonumber(sub(s, a, e)), e + 1
  end
  decode = function(s)
    local v, i = value(s, 1)
    if skip(s, i) <= #s then fail(i, "trailing text") end
    return v
  end
end

-- check validates a decoded membership document and returns the number
-- of upstreams and servers, or nil and the reason.
local function check(m)
  if type(m) ~= "table" or type(m.upstreams) ~= "table" then return nil, "no upstreams" end
  local servers = 0
  for _, u in ipairs(m.upstreams) do
    if type(u.name) ~= "string" or type(u.servers) ~= "table" then return nil, "an upstream without name or servers" end
    for _, s in ipairs(u.servers) do
      if type(s.addr) ~= "string" or not find(s.addr, ":%d+$") then return nil, "upstream " .. u.name .. ": a server without host:port" end
      if type(s.weight) ~= "number" or s.weight < 1 then return nil, "upstream " .. u.name .. ": server " .. s.addr .. ": bad weight" end
      servers = servers + 1
    end
  end
  return #m.upstreams, servers
end

-- store validates text and makes it the membership every worker uses. The
-- data is written before the version moves: a worker that sees a version
-- reads data at least that new.
local function store(text)
  local ok, m = pcall(decode, text)
  if not ok then return nil, m end
  local ups, servers = check(m)
  if not ups then return nil, servers end
  local dict = ngx.shared.scrimp
  local stored, err = dict:set("data", text)
  if not stored then return nil, "shared dict: " .. tostring(err) end
  local v, verr = dict:incr("version", 1, 0)
  if not v then return nil, "shared dict: " .. tostring(verr) end
  return v, ups, servers
end

-- init stores the membership the configuration carries (init_by_lua, in
-- the master: at start and on every reload).
function M.init(text)
  local v, err = store(text)
  if not v then error("scrimp: initial membership: " .. err) end
end

function M.init_worker()
  math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
end

-- Per-worker state. Peer state that must outlive a rebuild (failures,
-- round-robin weight) is kept by "upstream/addr".
local version = -1
local upstreams = {}
local fails, checked, weights = {}, {}, {}

-- inflight is the number of requests in flight to the server with key,
-- in all workers.
local function inflight(key)
  return ngx.shared.scrimp:get("c:" .. key) or 0
end
local points_cache = {} -- addr → its ring points, in order (see points)
local tries = 3

-- le32 is the four bytes of a 32-bit value, little-endian, as nginx
-- feeds its previous point into the next one on x86.
local function le32(h)
  return char(h % 256, floor(h / 256) % 256, floor(h / 65536) % 256, floor(h / 16777216) % 256)
end

-- points returns the first n ketama points of addr as nginx's "hash …
-- consistent" computes them: crc32(host "\0" port prev), prev the last
-- point (four zero bytes for the first).
local function points(addr, n)
  local have = points_cache[addr]
  if not have then
    have = {}
    points_cache[addr] = have
  end
  if #have < n then
    local host, port = addr:match("^(.*):(%d+)$")
    local base = host .. "\0" .. port
    local prev = have[#have] or 0
    for i = #have + 1, n do
      prev = ngx.crc32_long(base .. le32(prev))
      have[i] = prev
    end
  end
  return have
end

local function build_ring(u)
  local ring = {}
  for _, p in ipairs(u.peers) do
    local pts = points(p.addr, 160 * p.weight)
    for i = 1, 160 * p.weight do
      ring[#ring + 1] = { pts[i], p }
    end
  end
  sort(ring, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2].addr < b[2].addr
  end)
  local out, last = {}, nil
  for _, pt in ipairs(ring) do
    if pt[1] ~= last then
      out[#out + 1] = pt
      last = pt[1]
    end
  end
  u.ring = out
end

local function refresh()
  local dict = ngx.shared.scrimp
  local v = dict:get("version")
  if v == version then return end
  local text = dict:get("data")
  local ok, m = pcall(decode, text or "")
  if not ok or not check(m) then
    ngx.log(ngx.ERR, "scrimp: membership version ", v, " unusable, keeping version ", version, ": ", tostring(m))
    version = v
    return
  end
  tries = m.tries or tries
  local seen = {}
  for _, d in ipairs(m.upstreams) do
    local u = { name = d.name, balance = d.balance or "round-robin", hash_var = d["hash-var"], peers = {} }
    local front -- nil until a server this worker knew is seen
    for _, s in ipairs(d.servers) do
      local key = d.name .. "/" .. s.addr
      local host, port = s.addr:match("^(.*):(%d+)$")
      u.peers[#u.peers + 1] = {
        key = key, addr = s.addr, host = host, port = tonumber(port), weight = s.weight,
        max_fails = s["max-fails"] or 1, fail_timeout = s["fail-timeout"] or 10, node = s.node,
      }
      seen[key] = true
      local w = weights[key]
      if w and (not front or w + s.weight > front) then front = w + s.weight end
    end
    -- A server new to this worker enters the round at its front (the
    -- highest current weight of the servers it knew, after the next
    -- pick's increment): a backend that joins takes the next request
    -- instead of waiting for a random part of a round. Over a round the
    -- shares stay those of the weights.
    for _, p in ipairs(u.peers) do
      if not weights[p.key] then weights[p.key] = front or 0 end
    end
    if u.balance == "hash" then build_ring(u) end
    upstreams[d.name] = u
  end
  -- Forget the round-robin weights and failures of servers gone; their
  -- in-flight counts stay until their requests end.
  for key in pairs(weights) do
    if not seen[key] then weights[key], fails[key], checked[key] = nil, nil, nil end
  end
  version = v
end

-- usable says whether peer p may take this request: not tried by it
-- already, and not failed max_fails times within fail_timeout.
local function usable(p, tried, now, lenient)
  if tried[p.key] then return false end
  if lenient or p.max_fails == 0 then return true end
  local f = fails[p.key]
  return not f or f < p.max_fails or now - (checked[p.key] or 0) > p.fail_timeout
end

-- Smooth weighted round-robin (nginx's), over the peers filter accepts.
local function pick_rr(u, ok)
  local best, total = nil, 0
  for _, p in ipairs(u.peers) do
    if ok(p) then
      local w = weights[p.key] + p.weight
      weights[p.key] = w
      total = total + p.weight
      if not best or w > weights[best.key] then best = p end
    end
  end
  if best then weights[best.key] = weights[best.key] - total end
  return best
end

-- least_conn: the peers with the fewest in-flight requests per weight,
-- round-robin among those that tie.
local function pick_least(u, ok)
  local best, load = nil, {}
  for _, p in ipairs(u.peers) do
    if ok(p) then
      local c = inflight(p.key)
      load[p] = c
      if not best or c * best.weight < load[best] * p.weight then best = p end
    end
  end
  if not best then return nil end
  local bc = load[best]
  return pick_rr(u, function(p) return load[p] ~= nil and load[p] * best.weight == bc * p.weight end)
end

local function weighted_random(u, ok, except)
  local total = 0
  for _, p in ipairs(u.peers) do
    if p ~= except and ok(p) then total = total + p.weight end
  end
  if total == 0 then return nil end
  local r = math.random() * total
  for _, p in ipairs(u.peers) do
    if p ~= except and ok(p) then
      r = r - p.weight
      if r < 0 then return p end
    end
  end
  return nil
end

-- "random two least_conn": two peers at random by weight, the less loaded.
local function pick_random(u, ok)
  local a = weighted_random(u, ok)
  if not a then return nil end
  local b = weighted_random(u, ok, a)
  if b and inflight(b.key) * a.weight < inflight(a.key) * b.weight then return b end
  return a
end

-- Consistent hash: the first ring point at or after crc32(key); a point
-- whose peer cannot take the request passes to the next, and after 20
-- such points round-robin decides, as nginx does.
local function pick_hash(u, ok)
  local ring = u.ring
  local n = #ring
  if n == 0 then return nil end
  local key = ""
  if u.hash_var and u.hash_var ~= "" then key = ngx.var[u.hash_var] or "" end
  local h = ngx.crc32_long(key)
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if ring[mid][1] < h then lo = mid + 1 else hi = mid end
  end
  for i = 0, 20 do
    local p = ring[(lo - 1 + i) % n + 1][2]
    if ok(p) then return p end
  end
  return pick_rr(u, ok)
end

-- failed counts a failed try against peer p: after max_fails of them
-- within fail_timeout, p is skipped for fail_timeout.
local function failed(p, now)
  local f = fails[p.key] or 0
  if now - (checked[p.key] or 0) > p.fail_timeout then f = 0 end
  fails[p.key], checked[p.key] = f + 1, now
end

local pickers = { ["round-robin"] = pick_rr, ["least-conn"] = pick_least, random = pick_random, hash = pick_hash }

local function acquire(key)
  ngx.shared.scrimp:incr("c:" .. key, 1, 0)
end

local function release(key)
  ngx.shared.scrimp:incr("c:" .. key, -1, 0)
end

-- balance picks the peer of upstream name for this try of the request
-- (balancer_by_lua). A try after a failure counts the failure against
-- the previous peer first.
function M.balance(name)
  refresh()
  local u = upstreams[name]
  if not u or #u.peers == 0 then
    ngx.log(ngx.ERR, "scrimp: no servers for upstream ", name)
    return ngx.exit(502)
  end
  local ctx = ngx.ctx
  local st = ctx.scrimp
  local now = ngx.now()
  if not st then
    st = { tried = {} }
    ctx.scrimp = st
    local more = min(#u.peers, tries) - 1
    if more > 0 then balancer.set_more_tries(more) end
  elseif st.peer then
    local prev = st.peer
    release(prev.key)
    if balancer.get_last_failure() == "failed" then failed(prev, now) end
    st.peer = nil
  end
  local tried = st.tried
  local pick = pickers[u.balance] or pick_rr
  local p = pick(u, function(q) return usable(q, tried, now, false) end)
  if not p then
    -- Every peer left failed recently: try one anyway rather than none.
    p = pick(u, function(q) return usable(q, tried, now, true) end)
  end
  if not p then return ngx.exit(502) end
  tried[p.key] = true
  st.peer = p
  acquire(p.key)
  local ok, err = balancer.set_current_peer(p.host, p.port)
  if not ok then
    ngx.log(ngx.ERR, "scrimp: set_current_peer ", p.addr, ": ", err)
    return ngx.exit(502)
  end
end

-- log ends the request's last try (log_by_lua): it no longer counts as
-- in flight; a success clears its peer's failures, and a failure (nginx's
-- 502 or 504 for no answer, or a 502-504 answer; not a client that went
-- away) counts against it, as on a retry.
function M.log()
  local st = ngx.ctx.scrimp
  if not st or not st.peer then return end
  local p = st.peer
  st.peer = nil
  release(p.key)
  local status = tonumber(ngx.var.upstream_status and ngx.var.upstream_status:match("(%d+)$"))
  if status and status < 500 then
    fails[p.key] = nil
  elseif status and status >= 502 and status <= 504 then
    failed(p, ngx.now())
  end
end

-- post serves the loopback endpoint: the request body is the membership
-- of every upstream, which replaces the current one at once.
function M.post()
  if ngx.req.get_method() ~= "POST" then return ngx.exit(405) end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then
        body = f:read("*a")
        f:close()
      end
    end
  end
  if not body then
    ngx.status = 400
    ngx.say('{"error":"empty body"}')
    return
  end
  local v, ups, servers = store(body)
  if not v then
    ngx.status = 400
    ngx.say('{"error":', string.format("%q", tostring(ups)), '}')
    return
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say('{"version":', v, ',"upstreams":', ups, ',"servers":', servers, '}')
end

-- state answers the membership version and the worker's view (GET),
-- for tests and debugging.
function M.state()
  refresh()
  local out = {}
  for name, u in pairs(upstreams) do
    local ps = {}
    for _, p in ipairs(u.peers) do
      ps[#ps + 1] = string.format('{"addr":"%s","conns":%d,"fails":%d}', p.addr, inflight(p.key), fails[p.key] or 0)
    end
    out[#out + 1] = string.format('"%s":[%s]', name, concat(ps, ","))
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say('{"version":', version, ',"pid":', ngx.worker.pid(), ',"upstreams":{', concat(out, ","), '}}')
end

return M
