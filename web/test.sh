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
# A small effective batch keeps each step short on a software rasteriser; the planner still
# tries two sizes for real. Every block is recomputed in backward (activation checkpointing),
# so the browser runs that path too; the plain one is the native wgpu path's. It runs the page's
# default kernels (`auto`: sapling's WGSL kernels in place of burn's ops). Four steps: the
# page's losses are seeded, and here the mean of the last two is below that of the first two
# (1.7597 -> 1.7386; 11–15 s a step on 2026-12-07).
query="${SAPLING_WEB_QUERY:-effective=4&sizes=2&trial-steps=1&every=2&stop=4&checkpointing=blocks&initial-weights=1&autostart=1}"
node test/browser.mjs "http://127.0.0.1:$port/?$query" test/out
# Same numbers everywhere: the page's first loss against native sapling's from the same weights.
test/first-loss.sh "$PWD/test/out"
# A browser without `subgroups` (Firefox and Safari on many machines): the adapter hides the
# feature; the page must still train, and no shader may enable it. It runs burn's ops alone
# (`kernels=reference`), the path with the most burn kernels, so both kernel paths run in a
# browser. It also plans for a given memory budget, as a visitor sets one (`budget=MIB`). Four
# steps: the page's losses are seeded, so the first two against the last two fall here as they
# do in the run above (20–30 s a step here).
SAPLING_WEB_HIDE=subgroups node test/browser.mjs \
    "http://127.0.0.1:$port/?effective=4&sizes=1&trial-steps=1&every=2&stop=4&checkpointing=blocks&kernels=reference&budget=2048&autostart=1" \
    test/out-no-subgroups
