#!/bin/bash
# Workers of one faap study on many machines, as a Slurm job array: one array task = one
# worker on one GPU. Every task runs the same command; they share the study through
# PostgreSQL and pop its trials atomically (each grid point runs once).
#
# Once, beforehand, from any machine (creates the study and its grid, runs nothing):
#   faap sweep run sweeps/temperature.yaml --storage postgresql://USER@DB-HOST/faap --workers 0
# Then:
#   sbatch --export=ALL,FAAP_STUDY=temperature,FAAP_STORAGE=postgresql://USER@DB-HOST/faap \
#          ablations/cluster/slurm_array.sh
# Keep the password out of the URL (sbatch --export shows in sacct): put it in ~/.pgpass,
# which PostgreSQL's client library reads on every node.
#
#SBATCH --job-name=faap-sweep
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=48G
#SBATCH --time=24:00:00
#SBATCH --output=faap-worker-%A_%a.log
set -euo pipefail
: "${FAAP_STUDY:?set FAAP_STUDY to the study name}" "${FAAP_STORAGE:?set FAAP_STORAGE to the PostgreSQL URL}"
# Run folders (checkpoints) must be on a file system every node sees: a trial lost on one
# node resumes from its checkpoint on another.
export FAAP_RUNS="${FAAP_RUNS:-$PWD/runs}"
# Slurm's --gres=gpu:1 sets CUDA_VISIBLE_DEVICES to the task's GPU; the threads are the task's cores.
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}" OMP_WAIT_POLICY=PASSIVE
echo "faap worker: array task ${SLURM_ARRAY_TASK_ID:-none} on $(hostname), GPU ${CUDA_VISIBLE_DEVICES:-none}"
exec faap sweep worker "$FAAP_STUDY" --storage "$FAAP_STORAGE" --threads "$OMP_NUM_THREADS" --wandb "${FAAP_WANDB:-auto}"
