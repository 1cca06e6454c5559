#!/usr/bin/env bash
# The product's own path on one GPU, each part against the bare engine in the same call: CIFAR
# ResNet-20's full 64k-iteration schedule through `python -m orchestrator.train` (Ray Train, MLflow on
# sqlite, engine=fast), the Table 6 ablation packed through `python -m orchestrator.ablate` (Ray Tune)
# for a slice, ResNet-50 from ImageNet-like JPEG shards decoded on the GPU through `orchestrator.train`,
# and tests/workloads/test_cuda_paths.py. One unattended run of under 8 minutes on one H200.
#
# On the GPU machine (Python 3.12 + torch, no Ray, no MLflow, no network), from the repository root,
# with .whl/ (../shared/tools/device-wheelhouse .whl 3.12) and data/cifar10-jpeg.tar.gz carried
# (both git-ignored; bench/README.md says how):
#     OUT=/some/folder bash bench/gpu_orchestrated.sh
# The same parts at tiny sizes on the CPU (a few steps, small subsets, ResNet-18 for ResNet-50), with the
# checkout's .venv and nothing installed (CI runs it):
#     OUT=/some/folder bash bench/gpu_orchestrated.sh --quick
# Results in $OUT (default bench/results/gpu_orchestrated/), at most 8 files:
#     log.txt                   everything printed: versions, pip check, the card, each part's exit status
#     results.json              every figure, its baseline and ratio, the goals (bench/gpu_orchestrated.py report)
#     bare_cifar.json           the bare engine on the same JPEGs: ResNet-20's fast rate, the packed nets, test passes
#     imagenet_synthetic.json   the ImageNet net's step on synthetic tensors, eager and compiled
#     mlflow_cifar_train.db     each CLI run's MLflow database (its artifacts stay behind)
#     mlflow_ablate.db
#     mlflow_imagenet.db
# Parts run in priority order under a budget (GPU_ORCH_BUDGET seconds: 460 on a GPU, 1200 with --quick,
# which took 350-680 s in CI on 2 shared cores), each under its own limit; a part that no longer fits
# is skipped and says so, a failed part does not stop the others, and the report always runs.
# GPU_ORCH_PARTS (default all) names the parts to run, comma-separated (setup always runs), e.g.
# GPU_ORCH_PARTS=cuda_paths,imagenet_compiled for what a first run skipped. PYTHON picks the
# interpreter (default python3; .venv/bin/python with --quick).
set -u
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = --quick ] && QUICK=1
OUT=${OUT:-bench/results/gpu_orchestrated}
PARTS=${GPU_ORCH_PARTS:-all}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log.txt"
: >"$LOG"
rm -f "$OUT"/{results,bare_cifar,imagenet_synthetic}.json "$OUT"/mlflow_{cifar_train,ablate,imagenet}.db  # a rerun's
WORK=$(mktemp -d /tmp/gpu_orchestrated.XXXXXX)  # each CLI's storage: checkpoints, MLflow databases, data
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1
SECONDS=0

if [ "$QUICK" = 1 ]; then
    PY=${PYTHON:-.venv/bin/python}
    BUDGET=${GPU_ORCH_BUDGET:-1200}
    export PYTHONPATH=$PWD
    export OMP_NUM_THREADS=1  # 2 shared cores: more threads per process only contend (measured 2x slower)
    Q=(--quick)
    # 50 training and 10 test images a class
    CIFAR_SUBSET=(--wildcards 'cifar10-jpeg/train/*/00[0-4]?.jpg' 'cifar10-jpeg/test/*/000?.jpg')
    Q_TRAIN=(--set use_gpu=false --set val_split=50 --iterations 6)  # 2 epochs of 3 steps; 450/50 as 45k/5k
    ABLATE_SLICE=$BUDGET                                       # to its end
    Q_ABLATE=(--set use_gpu=false --set recipe.total=6 --set 'recipe.milestones=[3,5]' --axis 'depth=[8]')
    IMAGENET_NET=resnet18                                      # 2.2x fewer multiply-adds than ResNet-50
    Q_TREE=(--train 16 --val 8 --size 160x120)                # 2 steps of 8 an epoch
    Q_IMAGENET=(--set use_gpu=false --set cpus_per_worker=1 --set recipe.batch_size=8 --epochs 2 --set log_every=1)
    Q_SYN=(--quick --batch 8 --warmup 1 --steps 2 --rounds 1)
else
    PY=${PYTHON:-python3}
    BUDGET=${GPU_ORCH_BUDGET:-460}
    export PYTHONPATH=$PWD:/tmp/site  # the carried wheels, installed by setup
    Q=()
    CIFAR_SUBSET=()
    Q_TRAIN=()                 # the cifar10 preset as it is: 64k iterations, engine=fast, one GPU
    # Start-up (~40 s estimated: Ray, Tune, 60k JPEGs, 10 graph captures) + 3 packed epochs of ~12 s each.
    ABLATE_SLICE=90
    Q_ABLATE=()
    IMAGENET_NET=resnet50
    # 12 steps of 256 an epoch (prepare decodes each JPEG once, on one core: ~15 s): the steady rate comes
    # from the steps logged inside epochs 2-5, 9,216 images.
    Q_TREE=(--train 3072 --val 256)
    Q_IMAGENET=(--epochs 5 --set log_every=3)
    Q_SYN=()
fi

say() { echo "$*" | tee -a "$LOG"; }

selected() { [ "$1" = setup ] || [ "$PARTS" = all ] || [[ ",$PARTS," == *",$1,"* ]]; }

# part NAME CAP_SECONDS MIN_SECONDS FUNCTION: run FUNCTION by a deadline of min(CAP, what the budget has
# left) from now, if at least MIN is left. The function's commands read the time left with `left`.
# --quick ignores CAP and MIN: on a shared 2-core machine a part takes what it takes, within the budget.
part() {
    local name=$1 cap=$2 need=$3 fn=$4
    if ! selected "$name"; then
        say "=== $name: not in GPU_ORCH_PARTS"
        return
    fi
    local budget_left=$((BUDGET - SECONDS))
    [ "$QUICK" = 1 ] && cap=$budget_left need=1
    if ((budget_left < need)); then
        say "=== $name: SKIPPED ($budget_left s left of the ${BUDGET} s budget, needs >= $need s)"
        return
    fi
    DEADLINE=$((SECONDS + (cap < budget_left ? cap : budget_left)))
    say "=== $name (until ${DEADLINE} s, at ${SECONDS} s)"
    "$fn" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "=== $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (TIMED OUT)') after ${SECONDS} s"
}

# left [RESERVE]: seconds to the part's deadline, less RESERVE; at least 1 (`timeout 0` would never stop).
left() { local s=$((DEADLINE - SECONDS - ${1:-0})); echo $((s > 1 ? s : 1)); }

run() { echo "+ $*"; timeout --kill-after=10 "$(left)" "$@"; }

# timed NAME SLICE COMMAND...: COMMAND under a SIGINT after SLICE seconds (a CLI stops as on Ctrl-C, its
# private Ray with it; a SIGKILL 30 s later if not), its wall-clock start and end and exit status in
# $WORK/NAME.timing.json for the report. Callers leave those 30 s: SLICE = $(left 30) or less.
timed() {
    local name=$1 slice=$2 start rc
    shift 2
    echo "+ $* (stopped after ${slice} s)"
    start=$(date +%s.%N)
    timeout -s INT --kill-after=30 "$slice" "$@"
    rc=$?
    printf '{"start": %s, "end": %s, "exit": %d, "slice_s": %d}\n' "$start" "$(date +%s.%N)" "$rc" "$slice" \
        >"$WORK/$name.timing.json"
    return $rc
}

setup() {
    if [ "$QUICK" = 1 ]; then
        echo "--quick: $PY as it is, nothing installed"
    elif [ -d /tmp/site/ray ]; then
        echo "the wheels are in /tmp/site already (a rerun on a warm machine)"
    else
        run python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || return
    fi
    # On the GPU machine only gitpython, uvicorn, google-auth and pycparser may be missing (never imported).
    run "$PY" -m pip check || echo "(pip check: see above)"
    run "$PY" -c 'import sys, torch, torchvision, ray, mlflow; print("python", sys.version.split()[0],
        "torch", torch.__version__, "torchvision", torchvision.__version__, "ray", ray.__version__,
        "mlflow", mlflow.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"
    echo "$(getconf _NPROCESSORS_ONLN) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# The CIFAR-10 JPEG copy: data/cifar10-jpeg when it is there (a GPU run), else the tarball extracted
# (--quick: a subset); --quick without the tarball writes Fashion-MNIST as JPEGs.
cifar_data() {
    local tarball
    for tarball in data/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz ""; do
        [ -f "$tarball" ] && break
    done
    if [ "$QUICK" = 0 ] && [ -d data/cifar10-jpeg/train ] && [ -d data/cifar10-jpeg/test ]; then
        CIFAR=$PWD/data/cifar10-jpeg
    elif [ -n "$tarball" ]; then
        tar -xzf "$tarball" -C "$WORK" "${CIFAR_SUBSET[@]}" && CIFAR=$WORK/cifar10-jpeg
    elif [ "$QUICK" = 1 ]; then
        say "no cifar10-jpeg.tar.gz in data/ or ../shared/data/: the CIFAR parts train on Fashion-MNIST instead"
        "$PY" bench/gpu_orchestrated.py fashion-tree --out "$WORK/fashion-jpeg" --train 500 --test 100 2>&1 \
            | tee -a "$LOG" && CIFAR=$WORK/fashion-jpeg
    fi
    say "CIFAR parts read ${CIFAR:-nothing (no data/cifar10-jpeg.tar.gz): they will fail}"
}

cifar_bare() {
    [ -n "$CIFAR" ] || return 1
    run "$PY" bench/gpu_orchestrated.py bare-cifar --data "$CIFAR" --output "$OUT/bare_cifar.json" "${Q[@]}"
}

cifar_train() {
    [ -n "$CIFAR" ] || return 1
    timed cifar_train "$(left 30)" "$PY" -m orchestrator.train -p cifar10 --dataset cifar10-jpeg --data-root "$CIFAR" \
        --name resnet20-paper --storage-path "$WORK/cifar_train" "${Q_TRAIN[@]}"
}

ablate() {
    local slice rc
    [ -n "$CIFAR" ] || return 1
    slice=$(left 30)
    timed ablate $((ABLATE_SLICE < slice ? ABLATE_SLICE : slice)) "$PY" -m orchestrator.ablate -p cifar10-table6 \
        --set dataset=cifar10-jpeg --data-root "$CIFAR" --storage-path "$WORK/ablate" "${Q_ABLATE[@]}"
    rc=$?
    ((rc == 124)) && echo "(the slice ended it, as planned)" && rc=0
    return $rc
}

# The ImageNet part's data, made on the CPU in the background while the ablation starts up (its Ray, data
# and 10 graph captures take ~40 s, and its rate is measured from its first epoch on): ~25 s of the budget.
imagenet_data() {
    "$PY" bench/gpu_orchestrated.py imagenet-tree --out "$WORK/ilsvrc" "${Q_TREE[@]}" || return
    for split in train val; do
        "$PY" -m orchestrator.prepare --dataset imagenet --data-root "$WORK/ilsvrc" --split $split \
            --out "$WORK/shards" || return
    done
}

imagenet() {
    [ -f "$WORK/shards/val/manifest.json" ] || { echo "no shards: see imagenet_data above"; return 1; }
    # lr 0.01, not the paper's 0.1: on these synthetic JPEGs ResNet-50 diverged at 0.1 within 4 steps
    # (on an H200, and on the CPU in float32 alike; docs/PERFORMANCE.md). The slice times steps, not learning.
    timed imagenet "$(left 60)" "$PY" -m orchestrator.train -p imagenet --model "$IMAGENET_NET" \
        --data-root "$WORK/shards" --name "$IMAGENET_NET-device" --storage-path "$WORK/imagenet" --set workers=1 \
        --set decode=device --set recipe.lr=0.01 "${Q_IMAGENET[@]}"  # 30 s of the 60 for the baseline below
    run "$PY" bench/gpu_orchestrated.py synthetic-rate --model "$IMAGENET_NET" --mode eager \
        --output "$OUT/imagenet_synthetic.json" "${Q_SYN[@]}"
}

cuda_paths() { run "$PY" -W ignore::DeprecationWarning tests/workloads/test_cuda_paths.py; }

imagenet_compiled() {
    if [ "$QUICK" = 1 ]; then
        echo "GPU only: torch.compile of the net takes minutes on 2 cores"
        return
    fi
    run "$PY" bench/gpu_orchestrated.py synthetic-rate --model "$IMAGENET_NET" --mode compile \
        --output "$OUT/imagenet_synthetic.json"
}

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
say "gpu_orchestrated.sh$([ "$QUICK" = 1 ] && echo ' --quick') at $(date -u +%FT%TZ), commit $COMMIT," \
    "budget ${BUDGET} s, work folder $WORK"
part setup 120 10 setup
CIFAR=""
cifar_data
part cifar_bare 120 45 cifar_bare
part cifar_train 330 200 cifar_train
IMAGENET_DATA=""
if selected imagenet; then
    say "=== imagenet_data: in the background from ${SECONDS} s"
    imagenet_data >"$WORK/imagenet_data.log" 2>&1 &
    IMAGENET_DATA=$!
fi
part ablate 130 110 ablate
if [ -n "$IMAGENET_DATA" ]; then
    wait "$IMAGENET_DATA"
    say "=== imagenet_data: exit $? by ${SECONDS} s"
    grep -v '^\[.*\] shard ' "$WORK/imagenet_data.log" | tee -a "$LOG"
fi
part imagenet 150 100 imagenet
part cuda_paths 90 30 cuda_paths
part imagenet_compiled 150 90 imagenet_compiled

say "=== report (at ${SECONDS} s)"
timeout 120 "$PY" bench/gpu_orchestrated.py report --work "$WORK" --out "$OUT" \
    --commit "$COMMIT" "${Q[@]}" 2>&1 | tee -a "$LOG"
say "gpu_orchestrated.sh done in ${SECONDS} s; results in $OUT:"
ls -l "$OUT" | tee -a "$LOG"
