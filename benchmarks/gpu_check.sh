#!/usr/bin/env bash
# fedkd's GPU check in one command, for a GPU machine (issue 17). From the repository root:
#
#     bash benchmarks/gpu_check.sh            # ~5-6 min on a 16-core H200 box, bench ≤ 240 s
#
# 1. Installs what is missing: with .gpu_bundle/site.tar.xz (made by benchmarks/gpu_bundle.sh
#    on a machine with a registry; carried to a machine without network) it is unpacked to
#    /tmp/site; otherwise, where flwr and Ray are not importable, pip installs the `sim` extra
#    at constraints.txt's pins *except torch*, so the machine's CUDA build of torch stays.
# 2. Names the hardware (nvidia-smi, torch), runs the CUDA-marked tests (tests marked `gpu`),
#    then benchmarks/bench_gpu.py (CPU and fractional-GPU clients, 100 and 1,000 clients per
#    round), then a 2-round CLI run with simulation=ray_gpu as a smoke test of the config.
# 3. Everything lands in $OUT (the device tool's folder; default ./outputs/gpu_check):
#    bench_gpu.json, gpu_check.log. Render the docs from it afterwards, where the repo is:
#        python -m benchmarks.bench_gpu --from-json benchmarks/results/bench_gpu/<file>.json --docs
#
# Environment: PYTHON (default python3), BENCH_ARGS (extra bench_gpu flags, e.g. "--quick"),
# BENCH_TIMEOUT (s, default 330), SKIP_TESTS=1, SKIP_CLI=1.
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=0
started=$(date +%s)
stamp() { echo "== [$(($(date +%s) - started)) s] $*"; }

stamp "start $(date -u +%FT%TZ) on $(hostname); $(nproc) CPUs; $("$PY" -V 2>&1)"
nvidia-smi 2>/dev/null || echo "nvidia-smi: not available"

# ------------------------------------------------------------------------ 1. install
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ -f .gpu_bundle/site.tar.xz ] && [ "$(cat .gpu_bundle/python.txt 2>/dev/null)" = "$pyver" ]; then
    stamp "unpacking .gpu_bundle/site.tar.xz to /tmp/site"
    mkdir -p /tmp/site && tar -xJf .gpu_bundle/site.tar.xz -C /tmp/site || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "import flwr, ray, hydra" 2>/dev/null; then
        stamp "pip install -e .[sim] (constraints.txt without its torch pin: keep this torch)"
        grep -v '^torch==' constraints.txt >/tmp/constraints-no-torch.txt
        "$PY" -m pip install -q -c /tmp/constraints-no-torch.txt -e ".[sim]" || exit 1
    fi
fi
"$PY" -c "import torch, flwr, ray; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), '| flwr', flwr.__version__, '| ray', ray.__version__)" || exit 1

# ------------------------------------------------------------------------ 2. tests, bench, CLI
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    stamp "CUDA tests (pytest -m gpu)"
    timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -o addopts="" \
        tests/fedkd/test_training.py tests/fedkd/test_continual_learners.py \
        tests/benchmarks/test_bench_gpu.py || echo "CUDA tests: exit $?"
fi

stamp "benchmarks.bench_gpu ${BENCH_ARGS:-}"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
timeout -k 10 "${BENCH_TIMEOUT:-330}" "$PY" -m benchmarks.bench_gpu --out "$OUT/bench_gpu.json" \
    ${BENCH_ARGS:-} || echo "bench_gpu: exit $?"

if [ "${SKIP_CLI:-0}" != 1 ]; then
    stamp "CLI smoke: simulation=ray_gpu, 2 rounds, 20 tiny clients"
    timeout 90 "$PY" -m simulations.run simulation=ray_gpu dataset=synthetic partition=iid \
        models=mlp aggregation=mean logging=disabled fd.num_clients=20 fd.num_rounds=2 \
        fd.local_epochs=1 fd.server_epochs=1 dataset.public_subset=200 fd.checkpoint=false \
        fd.client_checkpoints=false references=false "hydra.run.dir=/tmp/gpu_check_cli" ||
        echo "CLI smoke: exit $?"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
stamp "done"
