# Shared by qemu_test.sh and tests/e2e/kindling_guest_test.sh: reads an
# expect file and checks a serial log against it.
#
#   source expect_lib.sh
#   load_expect FILE    # sets want_exit, want_poweroff, expect_fail,
#                       # patterns (or exits 2)
#   match_lines LOG     # calls fail() for each mismatch
#   skip_installable WHY  # SKIP, or a failure under CI=true

load_expect() {
  local expect=$1 line
  want_exit=0
  want_poweroff=0
  expect_fail=0
  patterns=()
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -z $line || $line == \#* ]] && continue
    if [[ $line =~ ^exit\ ([0-9]+)$ ]]; then
      want_exit=${BASH_REMATCH[1]}
      continue
    fi
    # `poweroff`: the guest ends by powering off (ACPI S5), not through the
    # debug-exit port: QEMU exits 0, kindling reports status 0.
    if [[ $line == poweroff ]]; then
      want_poweroff=1
      continue
    fi
    [[ $line == FAIL:* ]] && expect_fail=1
    patterns+=("$line")
  done <"$expect"
  # A VMM's own errors can exit like a guest: only output lines tell them
  # apart, so an expect file must name at least one.
  if ((${#patterns[@]} == 0)); then
    echo "$expect has no expected lines" >&2
    exit 2
  fi
}

match_lines() {
  local log=$1 i=0 pat
  local -a lines
  mapfile -t lines <"$log"
  for pat in "${patterns[@]}"; do
    while ((i < ${#lines[@]})) && ! [[ ${lines[i]} =~ ^${pat}$ ]]; do ((i++)); done
    if ((i >= ${#lines[@]})); then
      fail "no line matching '$pat' (in order)"
      break
    fi
    ((i++))
  done
  if ((!expect_fail)) && grep -q '^FAIL:' "$log"; then
    fail "the guest reported: $(grep -m1 '^FAIL:' "$log")"
  fi
}

# skip_installable WHY: something tools/setup.sh installs is missing. Prints
# `SKIP: WHY` and exits 0 — or, under CI=true, fails: CI must not go
# quietly weaker.
skip_installable() {
  if [[ ${CI:-} == true ]]; then
    echo "FAILED: $1 (CI=true, and tools/setup.sh installs it)"
    exit 1
  fi
  echo "SKIP: $1"
  exit 0
}
