#!/usr/bin/env bash
# Train the bundled demo model (simdistill_ros/models/simdistill_synth.pt) from scratch on a CPU, with the
# project's own commands: the synthetic world, the LiDAR+camera teacher, the SimDistill student and the
# camera-only baseline (same seed, steps and schedule; its image encoder also from the teacher), then
# devkit scores of both students and of random weights on the world's held-out val split.
# docs/training.md ("Demo model") has the times and the table these commands gave.
#
#   scripts/train_demo_model.sh [OUT] [--install]
#
# OUT (default runs/demo_model) must not hold an earlier run. A finished step is skipped when run again,
# so an interrupted run continues (`simdistill train --resume` continues an interrupted training).
# --install copies the student to simdistill_ros/models/simdistill_synth.pt (asks before replacing it).
# One torch thread per process; the student and the baseline train side by side (two processes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/demo_model
INSTALL=0
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) OUT=$arg ;;
  esac
done
SIMDISTILL=${SIMDISTILL:-simdistill}
export OMP_NUM_THREADS=1
W=$OUT/world

# 1. The world: the demo's generator settings (225 x 400 cameras, 3 sweeps), seed 0; 32 train / 8 val scenes.
[ -f "$W/splits.json" ] || $SIMDISTILL synth --out "$W" --scenes 40 --samples-per-scene 10 --seed 0 \
  --image-size 225 400 --sweeps 3 --workers 2

# 2. The teacher (16 epochs; devkit evaluation after epochs 8 and 16).
[ -f "$OUT/teacher/teacher.pt" ] || $SIMDISTILL train --stage teacher --config demo_synth --dataroot "$W" \
  --out "$OUT/teacher" --threads 1 --device cpu

# 3. SimDistill student and camera-only baseline from the same teacher, side by side.
pids=()
for stage in student baseline; do
  if [ ! -f "$OUT/$stage/student.pt" ]; then
    $SIMDISTILL train --stage "$stage" --config demo_synth --dataroot "$W" --out "$OUT/$stage" \
      --teacher "$OUT/teacher/teacher.pt" --threads 1 --device cpu --no-progress > "$OUT/$stage.log" 2>&1 &
    pids+=($!)
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

# 4. Devkit scores on the val split (the runs' own last evaluations are in RUN/eval/; these repeat them from
#    the deployable checkpoints, and add the random-weight reference).
for stage in student baseline; do
  [ -f "$OUT/eval/$stage/summary.json" ] || $SIMDISTILL eval-model --checkpoint "$OUT/$stage/student.pt" \
    --dataroot "$W" --split val --out "$OUT/eval/$stage" --threads 1
done
[ -f "$OUT/eval/random-seed0/summary.json" ] || $SIMDISTILL eval-model --untrained demo --seed 0 \
  --dataroot "$W" --split val --out "$OUT/eval/random-seed0" --threads 1

# 5. Bundle the student.
if [ "$INSTALL" = 1 ]; then
  cp -i "$OUT/student/student.pt" simdistill_ros/models/simdistill_synth.pt
fi
