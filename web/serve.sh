#!/usr/bin/env bash
# Builds the browser demo and serves web/ on http://127.0.0.1:${PORT:-8000}/ (WebGPU needs a
# secure context: localhost is one). Open that address in a WebGPU browser.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
# The README's first command (`cargo run --release`) leaves a trained `tiny` in runs/tiny: offer
# its weights beside the page, so a visitor can watch MAE work from the first step.
newest=$(ls -d ../runs/tiny/checkpoints/step-* 2>/dev/null | tail -1 || true)
if [ -n "$newest" ] && [ -x "${SAPLING:-../target/release/sapling}" ]; then
    mkdir -p weights
    "${SAPLING:-../target/release/sapling}" export --checkpoint "$newest" --with-decoder \
        --out weights/tiny-mae.safetensors
fi
port="${PORT:-8000}"
echo "web: serving on http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory .
