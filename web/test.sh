#!/usr/bin/env bash
# The browser test: builds the demo, serves it on 127.0.0.1, and has headless Chromium train
# `stop` steps on WebGPU (SwiftShader here). Results and a screenshot land in web/test/out/.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
(cd test && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; })
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory . > test/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" > /dev/null && break; sleep 0.1; done
# Trained weights, as the page offers them beside itself (web/serve.sh): native sapling trains
# `tiny` 30 steps on the CPU and exports it with its decoder (a few seconds).
weights=test/out-weights
rm -rf "$weights" && mkdir -p "$weights"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sapling/target}"
sapling="$CARGO_TARGET_DIR/release/sapling"
[[ -x $sapling ]] || (cd .. && cargo build --release --bin sapling)
"$sapling" train --device cpu --steps 30 --out "$weights/run" > "$weights/train.log" 2>&1
"$sapling" export --checkpoint "$weights/run/checkpoints/step-00000030" --with-decoder \
    --out "$weights/tiny-mae.safetensors" > /dev/null 2>&1
# The default page run, started from those weights: its first loss is native sapling's first
# loss from the same weights (test/first-loss.sh), and well below a fresh model's. A small
# effective batch keeps each step short on a software rasteriser; the planner still tries two
# sizes for real. Every block is recomputed in backward (activation checkpointing), so the
# browser runs that path too; the plain one is the native wgpu path's. It runs the page's
# default kernels (`auto`: sapling's WGSL kernels in place of burn's ops) and precision (`auto`:
# f32 on SwiftShader, which has no shader-f16). 11–15 s a step on 2026-12-07.
query="${SAPLING_WEB_QUERY:-weights=$weights/tiny-mae.safetensors&effective=4&sizes=2&trial-steps=1&every=2&stop=2&checkpointing=blocks&initial-weights=1&autostart=1}"
node test/browser.mjs "http://127.0.0.1:$port/?$query" test/out
test/first-loss.sh "$PWD/test/out"
# A browser without `subgroups` (Firefox and Safari on many machines): the adapter hides the
# feature; the page must still train from a fresh model, and no shader may enable it. It runs
# burn's ops alone (`kernels=reference`), the path with the most burn kernels, so both kernel
# paths run in a browser. It also plans for a given memory budget, as a visitor sets one
# (`budget=MIB`). Four steps: the page's losses are seeded, and the mean of the last two is
# below that of the first two (1.7597 -> 1.7386); its first loss is native sapling's too.
SAPLING_WEB_HIDE=subgroups node test/browser.mjs \
    "http://127.0.0.1:$port/?effective=4&sizes=1&trial-steps=1&every=2&stop=4&checkpointing=blocks&kernels=reference&budget=2048&initial-weights=1&autostart=1" \
    test/out-no-subgroups
test/first-loss.sh "$PWD/test/out-no-subgroups"
