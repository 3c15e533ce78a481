#!/usr/bin/env bash
# A long run's memory, to catch leaks: `tiny` for STEPS optimizer steps on each device, the
# wgpu pool's bytes in use and the process's resident memory sampled every 100 steps (from the
# run's own metrics.jsonl, kept in benches/results/long_run-DEVICE.jsonl), and the growth after
# warm-up: the mean of the second half of the samples against the first half's. Flat means no
# leak: the pool must not grow at all (burn reuses its buffers); resident memory wanders with the
# allocator's caching (mimalloc keeps freed memory ~10 s), so it passes under 5 %.
#
#   cargo build --release && benches/long_run.sh
#
# Environment: SAPLING (binary), DEVICES ("cpu wgpu"), STEPS (2000), WARMUP (steps, 300),
# BATCH (micro-batch = effective batch, 16).
set -euo pipefail
cd "$(dirname "$0")/.."
SAPLING=${SAPLING:-${CARGO_TARGET_DIR:-target}/release/sapling}
DEVICES=${DEVICES:-"cpu wgpu"}
STEPS=${STEPS:-2000}
WARMUP=${WARMUP:-300}
BATCH=${BATCH:-16}
[[ -x $SAPLING ]] || { echo "no sapling binary at $SAPLING: cargo build --release, or set SAPLING" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for device in $DEVICES; do
  out="$work/$device"
  start=$(date +%s)
  printf 'preset = "tiny"\n[train]\nlog_every = 100\nrecon_every = 0\ncheckpoint_every = %s\n' \
    "$STEPS" >"$work/run.toml"
  "$SAPLING" train --config "$work/run.toml" --device "$device" --steps "$STEPS" \
    --batch-size "$BATCH" --effective-batch "$BATCH" --out "$out" \
    >/dev/null 2>"$work/$device.err" || { cat "$work/$device.err" >&2; exit 1; }
  echo "== $device: $STEPS steps of tiny at batch $BATCH in $(( $(date +%s) - start )) s"
  cp "$out/metrics.jsonl" "benches/results/long_run-$device.jsonl"
  python3 - "$out/metrics.jsonl" "$WARMUP" <<'EOF' || status=1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
warmup = int(sys.argv[2])
mib = lambda b: "-" if b is None else f"{b / 2**20:9.1f}"
print(f"{'step':>6} {'pool MiB':>9} {'RSS MiB':>9} {'loss':>8}")
for l in lines:
    print(f"{l['step']:>6} {mib(l['device_bytes_in_use'])} {mib(l['rss_bytes'])} {l['loss']:8.4f}")
after = [l for l in lines if l["step"] >= warmup]
half = len(after) // 2
ok = True
for key, name, limit in [("device_bytes_in_use", "pool", 0.0), ("rss_bytes", "RSS", 0.05)]:
    if after[0][key] is None:
        continue
    # A leak is a trend, not one high sample: compare the means of the two halves after warm-up.
    early = sum(l[key] for l in after[:half]) / half
    late = sum(l[key] for l in after[half:]) / (len(after) - half)
    grew = (late - early) / early
    lo, hi = min(l[key] for l in after), max(l[key] for l in after)
    verdict = "flat" if grew <= limit else "GROWS"
    ok &= grew <= limit
    print(f"{name}: mean {early / 2**20:.1f} MiB over steps {after[0]['step']}-{after[half - 1]['step']}, "
          f"{late / 2**20:.1f} MiB over steps {after[half]['step']}-{after[-1]['step']} ({grew:+.1%}; "
          f"range {lo / 2**20:.1f}-{hi / 2**20:.1f}), {verdict}")
sys.exit(0 if ok else 1)
EOF
done
exit $status
