# Runs on the GPU machine from the repository root, over what benchmarks/gpu_bundle.sh packed into .devcarry/:
# unpack the packages (Ray, MLflow, ... for Python 3.12) and the data mirror, then benchmarks/gpu.py with its options.
set -eu
t0=$(date +%s)
mkdir -p /tmp/site /tmp/data
tar -xJf .devcarry/site312.tar.xz -C /tmp/site &
tar -xJf .devcarry/fsdd.tar.xz -C /tmp/data &
cp -r .devcarry/MNIST /tmp/data/
wait
export PYTHONPATH=/tmp/site/site312:$PWD BMA_DATA_MIRROR=/tmp/data BMA_CACHE_DIR=/tmp/bma-cache PYTHONUNBUFFERED=1
echo "unpacked in $(( $(date +%s)-t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
git log -1 --format='commit %h %s' 2>/dev/null || true
python3 -c "import sys, torch, ray, mlflow, entmax, soundfile; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available(), 'ray', ray.__version__, 'mlflow', mlflow.__version__)"
timeout 470 python3 benchmarks/gpu.py "$@"
echo "total $(( $(date +%s)-t0 )) s"
