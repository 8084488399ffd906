-- Random single byte ranges of one file: wrk ... -s SCRIPT URL -- SIZE SPAN
-- Every request asks for SPAN bytes starting at a uniformly random offset in [0, SIZE - SPAN].
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

init = function(args)
  size = tonumber(args[1])
  span = tonumber(args[2])
  if size == nil or span == nil or span > size then
    error("usage: -- SIZE SPAN with SPAN <= SIZE")
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

request = function()
  local first = math.random(0, size - span)
  local headers = {["Range"] = string.format("bytes=%d-%d", first, first + span - 1)}
  return wrk.format(nil, nil, headers)
end
