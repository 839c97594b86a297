#!/usr/bin/env bash
# Other work on the machine while a benchmark runs: every ~2 s, the
# processes that used more than 20 % of a CPU over the last second and are
# not descendants of OURPID (the benchmark itself). Runs until killed.
#
#   bench/monitor.sh OURPID LOG &
#
# LOG lines: `<seconds since midnight, local time> <%CPU> <pid> <command>`.
# bench/net and bench/vsock mark a run during which such a line was logged.
ours=$1 log=$2
: >"$log"
mine() {  # PID: is it OURPID or below it?
  local p=$1 i
  for ((i = 0; i < 64 && p > 1; i++)); do
    [[ $p == "$ours" ]] && return 0
    p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || return 1
    [[ -n $p ]] || return 1
  done
  return 1
}
while kill -0 "$ours" 2>/dev/null; do
  # The second frame of `top -n 2` has the CPU use over its 1 s interval.
  top -b -n 2 -d 1 -w 200 -c 2>/dev/null | awk '
    /^top -/ {frame++; split($3, t, ":"); now = t[1] * 3600 + t[2] * 60 + t[3]}
    frame == 2 && /^ *[0-9]+ / && $9 + 0 > 20 {
      cmd = $12; for (i = 13; i <= NF && i <= 16; i++) cmd = cmd " " $i
      print now, $9, $1, cmd }' |
    while read -r now cpu pid cmd; do
      mine "$pid" || echo "$now $cpu $pid $cmd" >>"$log"
    done
  sleep 1
done
