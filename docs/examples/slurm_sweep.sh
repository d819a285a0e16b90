#!/bin/bash
# A sweep on a Slurm cluster: one array task per point, every task writing the same study directory on a
# shared filesystem (each point has its own lock; finished points are skipped when a task is resubmitted).
#
#   factrecall study --config "$CONFIG" --out "$STUDY" --list-points      # N points, numbered 0..N-1
#   jobid=$(sbatch --parsable --array=0-$((N - 1)) docs/examples/slurm_sweep.sh)
#   sbatch --dependency=afterany:$jobid --wrap "factrecall report --study $STUDY"   # the sweep's summary and report
#
# `factrecall report` aggregates whatever points are finished and names the missing ones, so it may also be run
# at any time while the array is running. A point on a GPU: add `#SBATCH --gpus=1` and pass `--device cuda` (a point
# trains on one device; one run on several GPUs is `factrecall train` under torchrun or accelerate, README "Scale").
#SBATCH --job-name=factrecall-sweep
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=factrecall-sweep-%A_%a.out
set -euo pipefail
CONFIG=${CONFIG:-docs/examples/scale_sweep.toml}
STUDY=${STUDY:-studies/scale}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-2}
exec factrecall study --config "$CONFIG" --out "$STUDY" --point "${SLURM_ARRAY_TASK_ID:?run as a Slurm array task}"
