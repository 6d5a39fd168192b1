#!/usr/bin/env bash
# Regenerate the checked-in reference outputs in data/: the paper's Figs. 2-6
# at the default settings (tables as parquet + CSV with metadata, PNG panels),
# then the extra set rare (rare currents).
# Results do not depend on the number of workers; about two minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
thermospin-mc reproduce all --out data --no-progress "$@"
# an extra figure set (not part of "all"): rare currents, cloning and the Doob process
thermospin-mc reproduce rare --out data --no-progress "$@"
