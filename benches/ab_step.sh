#!/usr/bin/env bash
# Two sapling binaries' training steps on the CPU, alternating, as the ratio of B to A: the
# median of the rounds' ratios and their range, so a change is judged against its own before
# in one run on a machine whose speed drifts by more than the change.
#
#   benches/ab_step.sh BEFORE AFTER [ROUNDS] [PRESET] [BATCH] [STEPS]
#
# Each round runs `sapling bench step --device cpu` of A, then B (micro-batch = effective batch
# = BATCH, STEPS timed steps after the warm-up) and prints images/s and the phases of each.
set -euo pipefail
A=${1:?usage: benches/ab_step.sh BEFORE AFTER [ROUNDS] [PRESET] [BATCH] [STEPS]}
B=${2:?usage: benches/ab_step.sh BEFORE AFTER [ROUNDS] [PRESET] [BATCH] [STEPS]}
ROUNDS=${3:-6} PRESET=${4:-tiny} BATCH=${5:-32} STEPS=${6:-20}
for bin in "$A" "$B"; do
  [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 1; }
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "machine: $(nproc) cores, $(date -u +%F); $PRESET at $BATCH, $STEPS timed steps, $ROUNDS rounds"
printf '%-6s %9s %8s %8s %8s\n' build images/s "fwd ms" "bwd ms" "opt ms"
for _ in $(seq "$ROUNDS"); do
  for label in A B; do
    bin=$A; [[ $label == B ]] && bin=$B
    "$bin" bench step --preset "$PRESET" --device cpu --batch-size "$BATCH" \
      --effective-batch "$BATCH" --timed-steps "$STEPS" --json 2>/dev/null |
      python3 -c "import json,sys; d=json.load(sys.stdin); print('$label', d['images_per_sec'], d['forward_ms'], d['backward_ms'], d['optimizer_ms'])" |
      tee -a "$out" | awk '{printf "%-6s %9.2f %8.1f %8.1f %8.1f\n", $1, $2, $3, $4, $5}'
  done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
a = [float(r[1]) for r in rows if r[0] == "A"]
b = [float(r[1]) for r in rows if r[0] == "B"]
ratios = [y / x for x, y in zip(a, b)]
print(f"images/s median: A {statistics.median(a):.2f}, B {statistics.median(b):.2f}; "
      f"B/A median of rounds {statistics.median(ratios):.3f} "
      f"(range {min(ratios):.3f}-{max(ratios):.3f})")
PY
