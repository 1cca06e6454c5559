#!/usr/bin/env bash
# Every GPU check of bench/, in one unattended run of under 8 minutes on one H100/H200.
#
# Run it as-is from the repository root on the GPU machine (needs torch + torchvision + numpy +
# pyarrow + Pillow; never ray or mlflow):
#     OUT=/some/folder bash bench/gpu_checks.sh
# Results (at most 8 files, so they all come back from a lent device machine) go to $OUT
# (default bench/results/gpu_checks/):
#     log.txt                  everything printed, with the machine and each part's exit status
#     cifar_matrix.json        the 10 Table 6 nets, fast, alone and packed 5 / 10 at a time on CUDA streams
#     cifar_schedule.json      CIFAR ResNet-110 iterations/s, naive vs fast vs fast+compile, 64k extrapolation
#     data_pipeline.json       ImageNet shards decoded on the GPU vs on every CPU core; the ResNet-50 feed ratio
#     gpu_throughput_compile.json   ResNet-152 under torch.compile, ours vs torchvision
#     resident.json            ResidentLoader batches/s on the GPU (aim > 100k img/s) + whole-epoch augmentation
#     gpu_throughput.json      ours vs torchvision (ImageNet nets) / a reference (CIFAR nets), eager
#     cifar_real.json          ResNet-20, 20 epochs on real CIFAR-10 (only if data/cifar10-jpeg exists)
# Parts run in priority order, each under a timeout; a part that no longer fits the budget
# (GPU_CHECKS_BUDGET seconds, default 450) is skipped and says so. A failed part does not stop
# the others. PYTHON picks the interpreter (default python3). GPU_CHECKS_QUICK=1 runs every part
# in its tiny CPU mode (to test this script on a machine without a GPU).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_checks}
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECKS_BUDGET:-450}
QUICK=${GPU_CHECKS_QUICK:-0}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
export PYTHONUNBUFFERED=1
SECONDS=0

say() { echo "$*" | tee -a "$LOG"; }

# part NAME CAP_SECONDS MIN_SECONDS COMMAND...: run under min(CAP, what is left), if MIN fits.
part() {
    local name=$1 cap=$2 need=$3
    shift 3
    local left=$((BUDGET - SECONDS))
    if ((left < need)); then
        say "=== $name: SKIPPED ($left s left of the ${BUDGET} s budget, needs >= $need s)"
        return
    fi
    local limit=$((cap < left ? cap : left))
    say "=== $name (timeout ${limit} s, at ${SECONDS} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "=== $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)') after ${SECONDS} s"
}

say "gpu_checks.sh at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget ${BUDGET} s"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
  "$PY" -c 'import sys, torch, torchvision; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'
  nproc; } 2>&1 | tee -a "$LOG"

if [ "$QUICK" = 1 ]; then
    Q_CS=(--quick) Q_GT=(--quick) Q_RES=1 R110=cifar_resnet8
    Q_DP=(--images 32 --workers 2 --passes 1 --cifar-images 1024 --device-decode cpu --device-batch 16)
else
    Q_CS=() Q_GT=() Q_RES=0 R110=cifar_resnet110
    Q_DP=(--images 1024 --workers "$(nproc)" --passes 2 --device-batch 256)
fi

# 0. Correctness of the CUDA-only paths (packed streams, a fast run resumed, device decode), ~1 min.
part cuda_paths 120 30 "$PY" -W ignore::DeprecationWarning tests/workloads/test_cuda_paths.py

# 1. The Table 6 matrix: the 10 nets' fast rates one at a time, then packed 5 and 10 at a time on
#    CUDA streams in one process (PackedTrainers).
part cifar_matrix 150 60 "$PY" bench/cifar_schedule.py "${Q_CS[@]}" --models '' --matrix --pack 5,10 --warmup 10 \
    --steps 200 --output "$OUT/cifar_matrix.json"

# 2. ResNet-110's paper schedule: naive vs fast vs fast + torch.compile inside the CUDA graph.
part cifar_r110 200 90 "$PY" bench/cifar_schedule.py "${Q_CS[@]}" --models "$R110" --fast-compile --steps 300 \
    --output "$OUT/cifar_schedule.json"

# 3. ImageNet input: Parquet shards decoded on the GPU vs CPU decode on every core (and 1 core).
part data_pipeline 120 60 "$PY" -W ignore::DeprecationWarning bench/data_pipeline.py "${Q_DP[@]}" --no-ray \
    --out "$OUT/data_pipeline.json"

# 4. torch.compile rows not measured before: ResNet-152 (3 rounds) ours vs torchvision. Compiling both nets
#    took over 150 s on an H200 node (2026-11-27): give it more when the budget allows.
part gpu_throughput_compile 150 90 "$PY" bench/gpu_throughput.py "${Q_GT[@]}" --models resnet152 --compile resnet152 \
    --warmup 5 --steps 20 --rounds 3 --output "$OUT/gpu_throughput_compile.json"

# Parts 5-7 were measured before (docs/PERFORMANCE.md); rerun when the budget allows.
# 5. GPU-resident CIFAR augmentation rate.
part resident 45 20 "$PY" - "$OUT/resident.json" "$Q_RES" <<'EOF'
import json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, ".")
from workloads.data import ResidentLoader, per_pixel_mean, synthetic
from workloads.engine import get_recipe
from workloads.engine.fast_cifar import FastCifarTrainer
from workloads.models import build_model
out, quick = Path(sys.argv[1]), sys.argv[2] == "1"
device = torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")
n = 2048 if quick else 50_000
images, labels = synthetic(n, (3, 32, 32), 10)
mean = per_pixel_mean(images)
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
rows = {}
for batch in (128, 512):
    loader = ResidentLoader(images, labels, batch, train=True, mean=mean, device=device)
    for x, _ in loader:  # warm-up pass
        pass
    sync(); start, count = time.perf_counter(), 0
    for epoch in range(1 if quick else 3):
        loader.set_epoch(epoch)
        for x, _ in loader:
            count += len(x)
    sync(); rows[f"ResidentLoader train batches, batch {batch}"] = count / (time.perf_counter() - start)
trainer = FastCifarTrainer(build_model("cifar_resnet8").to(device), images, labels, get_recipe("cifar"),
                           device=device, mean=mean, cuda_graph=False)
trainer.epoch_batches(0); sync(); start = time.perf_counter()
for epoch in range(1 if quick else 3):
    xs, _ = trainer.epoch_batches(epoch)
sync(); rows["FastCifarTrainer.epoch_batches (whole epoch at once)"] = (1 if quick else 3) * xs.shape[0] * xs.shape[1] / (time.perf_counter() - start)
for k, v in rows.items():
    print(f"{k:<55} {v:>12,.0f} img/s  (aim > 100,000 on a GPU)")
out.write_text(json.dumps({"device": str(device), "images": n, "images_per_s": {k: round(v) for k, v in rows.items()},
                           "aim_images_per_s": 100000, "torch": torch.__version__}, indent=2) + "\n")
EOF

# 6. Ours vs torchvision (and the CIFAR reference), eager, every depth; v1 vs v1.5 ResNet-50.
part gpu_throughput 120 60 "$PY" bench/gpu_throughput.py "${Q_GT[@]}" --compile none --warmup 8 --steps 20 \
    --output "$OUT/gpu_throughput.json"

# 7. Real CIFAR-10 (a git-ignored copy the session puts at data/cifar10-jpeg).
if [ -d data/cifar10-jpeg/train ] && [ -d data/cifar10-jpeg/test ]; then
    part cifar_real 120 60 "$PY" bench/cifar_schedule.py "${Q_CS[@]}" --models '' --real-data data/cifar10-jpeg \
        --output "$OUT/cifar_real.json"
else
    say "=== cifar_real: SKIPPED (no data/cifar10-jpeg/{train,test} in the checkout)"
fi

say "gpu_checks.sh done in ${SECONDS} s; results in $OUT:"
ls -l "$OUT" | tee -a "$LOG"
