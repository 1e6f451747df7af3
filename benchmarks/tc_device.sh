# One device call that checks and times the tensor cores' fast product (kernels.cu gemm_tc):
# compiles every kernel it needs side by side, runs gemm_tc's GPU tests (printing mnist-deep's
# error table), times the large and mnist-deep products (benchmarks/gemm_tc.py), times
# configs/mnist-deep.toml's epochs with the fp32 default (SIMT and 3xTF32 tuned per product)
# and with the SIMT kernel alone (MLPTRAIN_CUDA_GEMM=cublas-simt, the default before gemm_tc),
# packs the kernel cache, then runs the SIMT regression subset and test_gpu_tf32.py. Each stage
# is capped so that the earlier ones' logs come back; the first five take about 5 minutes on a
# fresh H100/H200, all seven up to 10 (one command's limit): STAGES picks them.
#
#   bash benchmarks/tc_device.sh            # from the repository root, on the device machine
#   STAGES="compile tests bench fit cache" bash benchmarks/tc_device.sh     # the first call
#   STAGES="regress tf32" bash benchmarks/tc_device.sh                      # a second one
#
# Logs land in $OUT (or ./tc-logs): tests-tc.log, bench.log, deep-fit.log, regress.log,
# tests-tf32.log and kcache.tgz (unpack into the checkout's .kcache next time, with
# CUPY_CACHE_DIR pointing there, to skip the compiles).
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/tc-logs}
mkdir -p "$OUT" "${CUPY_CACHE_DIR:=$PWD/.kcache}"
export CUPY_CACHE_DIR PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
STAGES=${STAGES:-compile tests bench fit cache regress tf32}
T0=$(date +%s)
stage() { echo "== [t+$(( $(date +%s) - T0 ))s] $*"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"

want compile && stage "compile" && timeout 240 python3 - <<'PY' 2>&1 | tail -3
import time
import numpy as np
from mlptrain.backend.cuda import gemm as G
from mlptrain.backend.cupy_backend import CupyBackend
t, names = time.time(), set(G.kernel_names(np.float32, G.TILES, (G.MMA_SIMT,)))
# the shipped KF, and 3xTF32 with KF = 2 (compared in the tests and the benchmark)
for kf, mmas in ((G.TC_KF, (G.MMA_3XTF32_RN, G.MMA_TF32)), (2, (G.MMA_3XTF32_RN,))):
    shipped, G.TC_KF = G.TC_KF, kf
    names.update(G.kernel_names(np.float32, G.TC_TILES, mmas))
    names.update(G.gemm_name(np.float32, True, True, tile, mma) for tile in G.TC_TILES
                 for mma in mmas)
    G.TC_KF = shipped
CupyBackend(graph=False, gemm="own").prepare_kernels(sorted(names))
print(f"compiled or loaded {len(names)} product kernels in {time.time() - t:.1f} s")
PY

want tests && stage "gemm_tc tests (mnist-deep's error table)" &&
timeout 150 python3 -m pytest -q -s -m gpu tests/test_gpu_tc.py -p no:cacheprovider --tb=short \
    --maxfail=8 2>&1 | tee "$OUT/tests-tc.log" | grep -v '^\.*$' | tail -40

want bench && stage "product timings" &&
timeout 110 python3 benchmarks/gemm_tc.py --nets large,deep \
    --kernels simt,3xtf32,3xtf32-kf2,tf32 2>&1 | tee "$OUT/bench.log"

want fit && stage "mnist-deep epochs: fp32 default, then SIMT alone" &&
for gemm in cublas cublas-simt; do
    MLPTRAIN_CUDA_GEMM=$gemm timeout 120 python3 -m mlptrain fit configs/mnist-deep.toml \
        --device cuda --set train.epochs=5 --set report.plots=false --progress never 2>&1 \
        | tail -3 | tee -a "$OUT/deep-fit.log"
    run=$(ls -td runs/*/ | head -1)
    python3 - "$run" "$gemm" <<'PY' 2>&1 | tee -a "$OUT/deep-fit.log"
import json, statistics, sys
run, gemm = sys.argv[1:]
records = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
seconds = [r["seconds"] for r in records if "seconds" in r]
print(f"{gemm}: seconds per epoch {[round(s, 4) for s in seconds]}, median of epochs 2+ "
      f"{statistics.median(seconds[1:]):.4f} s; val accuracy "
      f"{[round(r.get('val_accuracy', 0), 4) for r in records]}")
PY
done

want cache && stage "kernel cache" &&
tar czf "$OUT/kcache.tgz" -C "$(dirname "$CUPY_CACHE_DIR")" "$(basename "$CUPY_CACHE_DIR")"
want cache && ls -la "$OUT/kcache.tgz"

want regress && stage "SIMT regression subset" &&
timeout 120 python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_gpu_graph.py \
    -k "gemm or stack or resume" -p no:cacheprovider --tb=short \
    2>&1 | tee "$OUT/regress.log" | tail -5

want tf32 && stage "test_gpu_tf32.py (the template's tensor-core multiplies, 45 products)" &&
timeout 200 python3 -m pytest -q -s -m gpu tests/test_gpu_tf32.py -p no:cacheprovider \
    --tb=short 2>&1 | tee "$OUT/tests-tf32.log" | grep -v '^\.*$' | tail -25
stage "done"
