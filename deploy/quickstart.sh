#!/usr/bin/env bash
# The main job end to end on a fresh machine: install, make sure Redis answers, start a
# worker, publish the bundled sample articles, wait for them and print a summary.
# Without Redis it says so and runs the embedded mode instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
bash deploy/services.sh
exec .venv/bin/enrich demo "$@"
