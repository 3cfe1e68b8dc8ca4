#!/usr/bin/env bash
# The main job: a bundle round trip on the embedded local store (DISDAT_HOME / DISDAT_CONFIG).
set -euo pipefail
dsdt init
dsdt context demo
dsdt switch demo
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'city,temp\nparis,21\noslo,12\n' > "$work/weather.csv"
dsdt add weather "$work/weather.csv" -t source:demo
dsdt commit weather
echo "--- bundles in context demo"
dsdt ls -v -p
echo "--- data of the newest 'weather' bundle"
dsdt cat weather
