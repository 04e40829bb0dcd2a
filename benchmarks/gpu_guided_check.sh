#!/usr/bin/env bash
# The guided path on a GPU in one short run: writes results/microbench/gpu_guided.md.
#
#   bash benchmarks/gpu_guided_check.sh        # on a CUDA machine, from the repository root
#
#   1. the sync-debug tests of guided sampling (tests/test_cuda_sync.py, "guidance")
#   2. every sampler on the shipped digits-cond model at w = 1 and 4, batch 4096, 10 and
#      35 NFE: counted NFE and network evaluations, wall-clock, overhead, samples/s, and
#      the class accuracy of the samples
#
# Shrink it to try the plumbing on a CPU:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=64 bash benchmarks/gpu_guided_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BATCH=${GPU_CHECK_BATCH:-4096}
OUT_DIR=${GPU_CHECK_OUT:-results/microbench}
WORK=$(mktemp -d)
REPORT="$OUT_DIR/gpu_guided.md"
mkdir -p "$OUT_DIR"
export MPLBACKEND=Agg
{
  echo "# GPU check of guided sampling"
  echo
  echo "Written by \`benchmarks/gpu_guided_check.sh\` on $(date -u +%Y-%m-%dT%H:%MZ)," \
       "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo '```'
  echo
  echo "## 1. No host synchronisation in guided sampling loops"
  echo
  echo '```'
} > "$REPORT"
"$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_sync.py -k guidance 2>&1 | tail -3 \
  >> "$REPORT"
printf '```\n\n## 2. Every sampler, digits-cond, batch %s\n\n' "$BATCH" >> "$REPORT"
if "$PY" -m harness.cli run guided --device "$DEVICE" --nfe 10,35 --guidance 1,4 \
    --num-samples "$BATCH" --batch-size "$BATCH" --metrics class_accuracy --quiet \
    --tracking-uri "sqlite:///$WORK/mlflow.db" --out "$WORK/results" \
    > "$WORK/run.log" 2>&1; then
  "$PY" - "$WORK/results/guided/trials.jsonl" "$BATCH" >> "$REPORT" <<'PYEOF'
import json, sys
path, batch = sys.argv[1], int(sys.argv[2])
print("nfe = guided evaluations per sample; network = network rows per sample (a doubled "
      "batch for w != 1); overhead = wall / time inside the network calls of the run.")
print()
print("| sampler | w | nfe | network | wall (s) | overhead | samples/s | class accuracy |")
print("|---|---|---|---|---|---|---|---|")
for line in open(path):
    r = json.loads(line)
    if r.get("kind") != "trial" or r.get("floor"):
        continue
    m = r["metrics"]
    if r["status"] != "FINISHED":
        print(f"| {r['sampler']} | {r.get('guidance')} | FAILED: {r['error']} | | | | | |")
        continue
    print(f"| {r['sampler']} | {r['guidance']:g} | {m['nfe']:g} | "
          f"{m.get('network_evals', m['nfe']):g} | {m['wall_clock_s']:.4f} | "
          f"{m['overhead_ratio']:.3f} | {batch / m['wall_clock_s']:.0f} | "
          f"{m.get('class_accuracy', float('nan')):.4f} |")
PYEOF
else
  echo "run failed: $(tail -3 "$WORK/run.log")" >> "$REPORT"
fi
echo "written: $REPORT" >&2
