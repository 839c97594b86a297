# Shared by bench/net/cases.sh and bench/vsock/cases.sh (POSIX sh, busybox
# is enough): sourced from beside them, on the host or inside
# tools/nested-kvm. A cases.sh defines attempt VMM DIR RUN (one boot; sets
# $status and $figures) and sets LOG before calling `one`.

mbs() {  # FILE ERE: the MB/s figure on the first line matching ERE
  v=$(grep -E "$2" "$1" 2>/dev/null | grep 'MB/s' | head -1 | sed -n 's/.* \([0-9][0-9]*\.[0-9][0-9]\) MB\/s.*/\1/p')
  echo "${v:--}"
}

now() { date +%H:%M:%S | awk -F: '{print $1 * 3600 + $2 * 60 + $3}'; }

# A run that fails (status other than kindling's 0 or QEMU's 1, e.g. the
# device flagged NEEDS_RESET) is reported and repeated, twice at most.
one() {  # VMM DIR RUN
  want=0
  [ "$1" = qemu ] && want=1
  tries=0
  while :; do
    t0=$(now)
    attempt "$@"
    t1=$(now)
    [ "$status" = $want ] && break
    tries=$((tries + 1))
    echo "retry $1 $2 $3 status $status: $(grep -E 'FAIL|needs reset|error' $LOG/$1-$2-$3.guest 2>/dev/null | head -2 | tr '\n' ' ')"
    [ $tries -ge 2 ] && break
  done
  echo "result $1 $2 $3 $figures status $status t $t0 $t1"
}
