#!/usr/bin/env bash
# Whether each carry fits one device call beside the working tree: a call carries the tree
# (tracked and untracked-not-ignored files) plus its carry paths, at most 64 MiB in all; a part
# that stopped fitting as the tree grew is refused at call time. Paths carried together are
# joined by commas.
#
#   bash gpu_tests/carry_fits.sh .te/p1 .te/p2 .te/p3 .te/p4,.te/small    # exit 1 if one does not fit
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
status=0
for carry in "$@"; do
  size=$(du -scb ${carry//,/ } | tail -1 | cut -f1)
  awk -v c="$carry" -v s="$size" -v t="$tree" 'BEGIN {
    m = 1048576; ok = s + t <= 64 * m
    printf "%s: %.1f MiB + the tree %.1f MiB = %.1f of 64 MiB: %s\n", c, s / m, t / m, (s + t) / m,
           ok ? "fits" : "does not fit: make the parts smaller"
    exit ok ? 0 : 1 }' || status=1
done
exit $status
