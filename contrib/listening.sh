# Sourced by the scripts that start herald and need the address it listens on.
#
# herald_address LOG PID: prints the address herald reports in LOG ("listening on ADDR"),
# waiting up to 10 s while PID lives; prints nothing and fails when the line does not come.
herald_address() {
  local log=$1 pid=$2 addr="" alive
  for _ in $(seq 1 200); do
    # Alive before the look: a process that wrote the line and then exited is still found.
    alive=yes
    kill -0 "$pid" 2>/dev/null || alive=no
    addr=$(grep -o 'listening on [0-9.:]*' "$log" 2>/dev/null | head -n 1 | cut -d' ' -f3 || true)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    [ $alive = yes ] || return 1
    sleep 0.05
  done
  return 1
}
