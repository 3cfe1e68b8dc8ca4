#!/usr/bin/env bash
# The main job: apply the example pipeline ml.evaluate.Evaluate to the embedded local store
# (DISDAT_HOME / DISDAT_CONFIG), then show the bundles, the result and its lineage.
set -euo pipefail
dsdt init
dsdt context demo
dsdt switch demo
echo "--- what would run"
dsdt apply --explain ml.evaluate.Evaluate --rows 500 --alphas '[0.1, 1.0, 10.0]'
echo "--- apply"
dsdt apply -ot run:demo ml.evaluate.Evaluate --rows 500 --alphas '[0.1, 1.0, 10.0]'
echo "--- bundles"
dsdt ls -v
echo "--- the result"
dsdt cat Evaluate
echo "--- its lineage"
dsdt lineage Evaluate
echo "--- applying again reuses everything"
dsdt apply -ot run:demo ml.evaluate.Evaluate --rows 500 --alphas '[0.1, 1.0, 10.0]'
