#!/usr/bin/env bash
# The GPU path in one run: writes results/microbench/gpu.md (and the raw JSON beside it).
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine, from the repository root
#
# A GPU machine without a package index gets MLflow and pydantic from carried wheels:
# see benchmarks/gpu_wheels.sh.
#
#   1. the CUDA tests: sync-debug (tests/test_cuda_sync.py: no host synchronisation per
#      step), compiled and traced noise against the eager draw, captured loops against
#      eager ones (the CUDA-named tests of test_fused_noise.py and test_capture.py)
#   2. Philox on CUDA: bit-identical integers to the CPU; normals within the stated 1e-5;
#      compiled draws (harness.core.fused_noise) bit-identical to eager ones on the device
#   3. noise time / network time at batch 4096, eager and compiled draws (digits,
#      gmm-64d, and 3x32x32 noise alone)
#   4. every sampler at batch 4096 on digits (network fp32 and bf16, with and without
#      --compile) and on gmm-64d (the exact oracle, as it is): NFE, wall-clock, network
#      time, overhead ratio, samples/s
#   5. a 2-process torchrun run against the 1-process run: same samples' metrics
#   6. a network of realistic size (untrained-unet-32, 56 M parameters) at batch 512:
#      every sampler's overhead, and ours against k-diffusion's loops
#      (benchmarks/realistic_network.py; results/microbench/gpu_realnet*.json beside)
#
# Sizes can be shrunk to try the plumbing on a CPU machine:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=64 GPU_CHECK_MODES=fp32:no bash benchmarks/gpu_check.sh
# Every section records its own failure in the report and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BATCH=${GPU_CHECK_BATCH:-4096}
STEPS=${GPU_CHECK_STEPS:-10}
MODELS=${GPU_CHECK_MODELS:-digits gmm-64d}
# network dtype : compile (yes: the network through torch.compile; capture: each sampler
# call compiled whole, CUDA graphs, `--capture compiled`)
MODES=${GPU_CHECK_MODES:-fp32:no fp32:yes fp32:capture bf16:no bf16:yes}
OUT_DIR=${GPU_CHECK_OUT:-results/microbench}
WORK=$(mktemp -d)
REPORT="$OUT_DIR/gpu.md"
SAMPLERS=euler,heun,euler_maruyama,predictor_corrector,langevin,lambda_sde
# Captured: ~15-30 s of compilation per sampler and batch size, so three of them.
CAPTURE_SAMPLERS=euler,heun,euler_maruyama
mkdir -p "$OUT_DIR"
export MPLBACKEND=Agg

section() { printf '\n## %s\n\n' "$1" >> "$REPORT"; echo "== $1" >&2; }
failed() { printf '**FAILED** (exit %s): see the log above this line in the console.\n' "$1" \
             >> "$REPORT"; }

{
  echo "# GPU check"
  echo
  echo "Written by \`benchmarks/gpu_check.sh\` on $(date -u +%Y-%m-%dT%H:%MZ)," \
       "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo '```'
} > "$REPORT"

# --- 1 ---------------------------------------------------------------------------------
section "1. CUDA tests: no host synchronisation in the loops, noise, captured loops"
echo '```' >> "$REPORT"
"$PY" -m pytest -q -p no:cacheprovider -rs tests/test_cuda_sync.py tests/test_fused_noise.py \
    tests/test_capture.py -k cuda 2>&1 | tail -8 >> "$REPORT"
status=${PIPESTATUS[0]}
echo '```' >> "$REPORT"
[ "$status" -eq 0 ] || failed "$status"

# --- 2 and 3 ---------------------------------------------------------------------------
section "2-3. Philox on the device; noise time / network time, eager and compiled draws"
"$PY" - "$DEVICE" "$BATCH" >> "$REPORT" <<'EOF' || failed $?
import os, statistics, sys, time
import torch
sys.path.insert(0, "benchmarks")
from harness.core import fused_noise
from harness.core.noise import SampleNoise
from harness.core.philox import philox4x32
from harness.core.sde import make_sde
from harness.models.oracle import mixture_64d
from shipped_model import digits_model

device, batch = torch.device(sys.argv[1]), int(sys.argv[2])

def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()

def timed(fn, repeats=20):
    fn(); sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

def use(path):
    """Draws on `path` (eager or compiled) from the next SampleNoise on; its description."""
    os.environ[fused_noise.NOISE_ENV] = path
    fused_noise.forget_probes()
    return fused_noise.noise_backend(device)

gen = torch.Generator().manual_seed(0)
counters = torch.randint(0, 2**32, (4, 100_000), generator=gen, dtype=torch.int64)
same_bits = torch.equal(philox4x32(counters.to(device), (123, 456)).cpu(),
                        philox4x32(counters, (123, 456)))
use("eager")
ours = SampleNoise(7, range(batch), (3, 32, 32), device=device)
cpu = SampleNoise(7, range(batch), (3, 32, 32))
diff = max(float((ours().cpu() - cpu()).abs().max()) for _ in range(3))
compiled = use("compiled")  # raises if the device cannot compile the draw: reported
fused = SampleNoise(7, range(batch), (3, 32, 32), device=device)
same_draws = all(torch.equal(fused.draw(k).view(torch.int32), ours.draw(k).view(torch.int32))
                 for k in range(3))
print(f"- Philox4x32-10 integers on {device} equal to the CPU's (100k random counters): "
      f"**{same_bits}**")
print(f"- normals, {device} vs CPU, {batch} x 3x32x32, 3 draws: max |difference| "
      f"{diff:.2e} (stated bound 1e-5: **{'within' if diff <= 1e-5 else 'EXCEEDED'}**)")
print(f"- compiled draws on {device} bit-identical to eager draws there (3 draws): "
      f"**{same_draws}**; compiled path: {compiled}")
print()
print("| model | batch | values per sample | path | noise draw (ms) | network call (ms) "
      "| noise / network |")
print("|---|---|---|---|---|---|---|")
oracle = mixture_64d(make_sde("vp")).to(device)
digits, _ = digits_model(device)
for name, model in (("digits", digits), ("gmm-64d", oracle)):
    shape = model.data.shape
    x = torch.randn(batch, *shape, device=device, dtype=model.dtype)
    for path in ("eager", "compiled"):
        use(path)
        noise = SampleNoise(0, range(batch), shape, device=device, dtype=model.dtype)
        with torch.no_grad():
            draw = timed(lambda: noise())
            net = timed(lambda: model.score(x, 0.5 * model.sde.T))
        print(f"| {name} | {batch} | {x[0].numel()} | {path} | {1e3 * draw:.3f} | "
              f"{1e3 * net:.3f} | {draw / net:.3f} |")
for path in ("eager", "compiled"):
    use(path)
    noise = SampleNoise(7, range(batch), (3, 32, 32), device=device)
    print(f"| (noise only) | {batch} | 3072 | {path} | {1e3 * timed(noise):.3f} | - | - |")
EOF

# --- 4 ---------------------------------------------------------------------------------
section "4. Every sampler at batch $BATCH, $STEPS steps"
cat >> "$REPORT" <<EOF
overhead = wall / (NFE calls x bare network call), from each trial's own measurement
(\`overhead_ratio\`); samples/s = $BATCH / wall-clock. One seed, no quality metric.
compile = capture: each sampler call compiled whole (CUDA graphs); its network time cannot
be told apart inside the graph, so network and overhead are blank: compare its wall-clock
with the same sampler's eager row.

| model | network | compile | sampler | NFE | wall (s) | network (s) | overhead | samples/s |
|---|---|---|---|---|---|---|---|---|
EOF
for model in $MODELS; do
  modes=$MODES
  # The oracle has no network module: it runs as it is (float64), uncompiled.
  [ "$model" = gmm-64d ] && modes=native:no
  for mode in $modes; do
    ndtype=${mode%%:*}; compile=${mode##*:}
    flag=--no-compile; [ "$compile" = yes ] && flag=--compile
    samplers=$SAMPLERS
    [ "$compile" = capture ] && { flag="--no-compile --capture compiled"; samplers=$CAPTURE_SAMPLERS; }
    exp="gpu-$model-$ndtype-$compile"
    if "$PY" -m harness.cli run default --model "$model" --device "$DEVICE" \
        --network-dtype "$ndtype" $flag --samplers "$samplers" --steps "$STEPS" \
        --seeds 0 --num-samples "$BATCH" --batch-size "$BATCH" --set 'metrics={}' --quiet \
        --experiment "$exp" --tracking-uri "sqlite:///$WORK/mlflow.db" \
        --out "$WORK/results" > "$WORK/$exp.log" 2>&1; then
      "$PY" - "$WORK/results/$exp/trials.jsonl" "$model" "$ndtype" "$compile" "$BATCH" \
          >> "$REPORT" <<'EOF'
import json, sys
path, model, ndtype, compile, batch = sys.argv[1:]
def blank_or(value, spec):
    return "-" if value is None else format(value, spec)
for line in open(path):
    r = json.loads(line)
    if r.get("kind") != "trial":
        continue
    m = r["metrics"]
    if r["status"] != "FINISHED":
        print(f"| {model} | {ndtype} | {compile} | {r['sampler']} | FAILED: {r['error']} "
              f"| | | | |")
        continue
    print(f"| {model} | {ndtype} | {compile} | {r['sampler']} | {m['nfe']:.0f} | "
          f"{m['wall_clock_s']:.4f} | {blank_or(m.get('network_s'), '.4f')} | "
          f"{blank_or(m.get('overhead_ratio'), '.3f')} | "
          f"{int(batch) / m['wall_clock_s']:.0f} |")
EOF
    else
      echo "| $model | $ndtype | $compile | (run failed: $(tail -1 "$WORK/$exp.log")) | | | | | |" \
        >> "$REPORT"
    fi
  done
done
cp "$WORK"/results/*/trials.jsonl "$OUT_DIR/" 2>/dev/null || true

# --- 5 ---------------------------------------------------------------------------------
section "5. Two processes (torchrun) against one"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$DEVICE" = cuda ] && [ "$GPUS" -lt 2 ]; then
  # NCCL refuses two ranks on one GPU: the split is checked on the CPU (gloo) instead.
  TR_DEVICE=cpu
  echo "One GPU: NCCL needs one GPU per process, so the 2-process run uses gloo on the CPU." \
    >> "$REPORT"
else
  TR_DEVICE=$DEVICE
fi
common=(run default --model gmm-64d --device "$TR_DEVICE" --samplers euler_maruyama,heun
        --steps "$STEPS" --seeds 0 --num-samples 512 --batch-size 128
        --metrics mmd_oracle,sliced_wasserstein --quiet
        --tracking-uri "sqlite:///$WORK/mlflow-tr.db")
"$PY" -m harness.cli "${common[@]}" --experiment one --out "$WORK/tr" > "$WORK/one.log" 2>&1
one=$?
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} OMP_NUM_THREADS=1 \
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m harness.cli \
  "${common[@]}" --experiment two --out "$WORK/tr" > "$WORK/two.log" 2>&1
two=$?
if [ "$one" -ne 0 ] || [ "$two" -ne 0 ]; then
  echo "one process exit $one, two processes exit $two: $(tail -2 "$WORK/two.log")" \
    >> "$REPORT"
  failed "$one/$two"
else
  "$PY" - "$WORK/tr/one/trials.jsonl" "$WORK/tr/two/trials.jsonl" >> "$REPORT" <<'EOF'
import json, sys
def load(path):
    # Sampler trials only: the real-data floor rows have no wall-clock.
    return {r["name"]: r["metrics"] for r in map(json.loads, open(path))
            if r.get("kind") == "trial" and "wall_clock_s" in r["metrics"]}
one, two = map(load, sys.argv[1:])
print("| trial | metric | 1 process | 2 processes | wall 1 (s) | wall 2 (s) |")
print("|---|---|---|---|---|---|")
for name in sorted(one):
    for metric in ("mmd_oracle", "sliced_wasserstein"):
        if metric in one[name]:
            print(f"| {name} | {metric} | {one[name][metric]:.6g} | "
                  f"{two[name].get(metric, float('nan')):.6g} | "
                  f"{one[name]['wall_clock_s']:.3f} | {two[name]['wall_clock_s']:.3f} |")
EOF
fi

# --- 6 ---------------------------------------------------------------------------------
# A 3x32x32 U-Net of DDPM++'s CIFAR-10 size, untrained. Estimate on one H100 (18.3 GFLOP
# per sample and call): a call at batch 512 ~100 ms in fp32 (TF32 convolutions), ~40 ms
# in bf16. Uncompiled, every sampler (16, 195 NFE at 10 steps) runs once after a 2-step
# warm-up, then as many bare calls, then the 3 k-diffusion pairs: ~520 calls, ~50 s fp32
# and ~20 s bf16. Compiled (~1 min of compilation per mode), only the samplers compared
# with k-diffusion: ~160 calls, ~75 s fp32 and ~65 s bf16. About 3.5 min in all; a
# deadline keeps the section within 5 min whatever happens (the script writes its
# tables after every mode, so a cut run keeps the modes it finished). On a CPU dry run:
# batch 2, 2 steps, the compared samplers only (a forward of this network at batch 2
# takes ~0.3 s on one core).
if [ "$DEVICE" = cpu ]; then
  RN_SIZE=(--batch 2 --steps 2); RN_ALL=euler,heun,dpmpp_2m
else
  RN_SIZE=(--batch 512 --steps "$STEPS"); RN_ALL=all
fi
RN_COMPARED=euler,heun,dpmpp_2m
RN_DEADLINE=$((SECONDS + 300))
section "6. A network of realistic size (untrained-unet-32), batch ${RN_SIZE[1]}"
for mode in $MODES; do
  [ "${mode##*:}" = capture ] && continue   # section 4's mode only
  samplers=$RN_ALL; [ "${mode##*:}" = yes ] && samplers=$RN_COMPARED
  tag=${mode/:/-}
  if [ $((RN_DEADLINE - SECONDS)) -lt 20 ]; then
    echo "$mode: not run, the section's 5 minutes are spent" >> "$REPORT"; continue
  fi
  timeout $((RN_DEADLINE - SECONDS)) "$PY" benchmarks/realistic_network.py \
      --device "$DEVICE" "${RN_SIZE[@]}" --modes "$mode" --samplers "$samplers" --markdown "$WORK/realnet-$tag.md" \
      --json "$OUT_DIR/gpu_realnet-$tag.json" > "$WORK/realnet-$tag.log" 2>&1
  status=$?
  if [ -s "$WORK/realnet-$tag.md" ]; then
    cat "$WORK/realnet-$tag.md" >> "$REPORT"; echo >> "$REPORT"
  fi
  [ "$status" -eq 0 ] || { tail -3 "$WORK/realnet-$tag.log" >> "$REPORT"; failed "$status"; }
done

echo "written: $REPORT (work files in $WORK)" >&2
