#!/usr/bin/env bash
# Scans service logs for the personal data of the sample quote that the end-to-end and
# browser tests submit: passport, licence, VIN, plate and names must never appear in clear.
#   scripts/pii-scan.sh [LOG_DIR]   (default .demo/logs; exit 1 when anything is found)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.demo/logs}"
shopt -s nullglob
logs=("$dir"/*.log)
((${#logs[@]})) || { echo "error: no logs in $dir — run the platform first (scripts/demo.sh --e2e)" >&2; exit 1; }

# The sample's values, in the forms people type them and the forms we normalise to.
needles=(
  "4510 123456" "4510123456"          # passport
  "7700 123456" "7700123456"          # licence
  "XTAGFL110KY123456"                 # VIN
  "А123ВС77" "A123BC77"               # plate, Cyrillic and Latin
  "Иванов" "Иванович"                 # names
)
lines=$(cat "${logs[@]}" | wc -l)
found=0
for needle in "${needles[@]}"; do
  if hits=$(grep -F -n -- "$needle" "${logs[@]}"); then
    echo "personal data in logs: '$needle'" >&2
    echo "$hits" | head -n 3 >&2
    found=1
  fi
done
if ((found)); then exit 1; fi
echo "==> no personal data in ${#logs[@]} log files ($lines lines) under $dir"
