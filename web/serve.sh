#!/usr/bin/env bash
# Builds the browser demo and serves web/ on http://127.0.0.1:${PORT:-8000}/ (WebGPU needs a
# secure context: localhost is one). Open that address in a WebGPU browser.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
port="${PORT:-8000}"
echo "web: serving on http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory .
