#!/usr/bin/env bash
# Install, index the bundled sample corpus, and run example searches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ner-retriever demo "$@"
