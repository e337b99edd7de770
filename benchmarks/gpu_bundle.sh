#!/usr/bin/env bash
# Pack what benchmarks/gpu.py needs on a GPU machine that has PyTorch (Python 3.12) but no network, no Ray and no
# MLflow: the packages of .venv that such an image lacks, as cp312 wheels of the same versions, installed into one
# folder, pruned of what a study never loads, and packed with xz; plus the data mirror. Writes .devcarry/ (kept out
# of git by .git/info/exclude), about 60 MB:
#
#   bash benchmarks/gpu_bundle.sh                 # here, with network to the package index
#   bash .devcarry/run.sh [gpu.py options]        # there, from the repository root
#
# Usage: gpu_bundle.sh [PACKAGES_THERE]   PACKAGES_THERE: a file of the package names the GPU image already holds,
# one per line (default: none, so every package of .venv but the torch family is packed).
set -euo pipefail
cd "$(dirname "$0")/.."
HAVE=${1:-/dev/null}
MIRROR=${BMA_DATA_MIRROR:-../shared/data}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
grep -qx '/.devcarry/' .git/info/exclude 2>/dev/null || echo '/.devcarry/' >> .git/info/exclude
mkdir -p .devcarry

# the packages of .venv, less the GPU image's, the torch family and the test-only ones
.venv/bin/python -m pip freeze | grep -v '^-e\|^#' > "$WORK/freeze.txt"
python3 - "$WORK/freeze.txt" "$HAVE" > "$WORK/need.txt" <<'PY'
import sys
norm = lambda n: n.strip().lower().replace("_", "-")
have = {norm(line) for line in open(sys.argv[2]) if line.strip()}
skip = {"torch", "torchaudio", "torchvision", "triton", "moto", "boto3", "botocore", "s3transfer", "cfn-lint",
        "aws-xray-sdk", "infomeasure", "py-partiql-parser", "responses", "joserfc", "jsonpath-ng", "docker",
        "openapi-schema-validator", "openapi-spec-validator", "xmltodict", "jsonschema-path", "pathable",
        "lazy-object-proxy", "rfc3339-validator", "py-spy", "virtualenv", "distlib", "python-discovery", "pytest",
        "pytest-timeout", "iniconfig", "pluggy"}
for line in open(sys.argv[1]):
    name = line.split("==")[0]
    if norm(name) not in have and norm(name) not in skip and not norm(name).startswith("nvidia-"):
        print(line.strip())
PY
PLATFORMS=""
for p in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux1; do
  PLATFORMS="$PLATFORMS --platform ${p}_x86_64"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
  -d "$WORK/wheels" -r "$WORK/need.txt"
python3 -m pip install -q --no-deps --no-index --no-compile --only-binary=:all: --python-version 3.12 \
  --implementation cp $PLATFORMS --target "$WORK/site312" "$WORK"/wheels/*.whl
# never loaded by a study: Ray's Java jars, RLlib, Serve, LLM and the dashboard's web build; MLflow's web UI
rm -rf "$WORK"/site312/ray/{jars,rllib,serve,llm,dashboard/client/build} "$WORK/site312/mlflow/server/js"
strip --strip-unneeded "$WORK/site312/ray/_raylet.so"
strip "$WORK/site312/ray/core/src/ray/gcs/gcs_server" "$WORK/site312/ray/core/src/ray/raylet/raylet"
tar -cf - -C "$WORK" site312 | xz -T0 -9 > .devcarry/site312.tar.xz
tar -cf - -C "$MIRROR" fsdd | xz -T0 -9 > .devcarry/fsdd.tar.xz
rm -rf .devcarry/MNIST && cp -r "$MIRROR/MNIST" .devcarry/
cp benchmarks/gpu_device_run.sh .devcarry/run.sh
du -sh .devcarry
