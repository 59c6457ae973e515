#!/bin/bash
# A probexec job on one Slurm node, in the Apptainer image built from docker/probexec.def.
#   sbatch docker/slurm-example.sh                    runs `probexec demo`
#   sbatch docker/slurm-example.sh python my_job.py   runs your own command in the container
#
#SBATCH --job-name=probexec
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8          # the engine plus the simulator processes it starts
#SBATCH --mem=16G
#SBATCH --time=01:00:00
#SBATCH --output=probexec-%j.out
set -euo pipefail

# Where the image lives (shared filesystem is fine for the image itself).
SIF=${PROBEXEC_SIF:-$HOME/containers/probexec.sif}

# The engine talks to the simulators it starts over ipc:// (Unix domain) sockets, created under
# $TMPDIR. Those must be on a node-local filesystem: Unix sockets do not work (or work badly) on
# parallel/network filesystems such as Lustre, GPFS or NFS, which is where $HOME and project
# space usually are. Use the job's local scratch: Slurm's $TMPDIR or $SLURM_TMPDIR where the site
# sets one, else the node's /tmp. A socket path is limited to about 107 bytes, so keep it short.
LOCAL_SCRATCH=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
JOB_TMP=$(mktemp -d "${LOCAL_SCRATCH%/}/probexec-${SLURM_JOB_ID:-$$}.XXXX")
trap 'rm -rf "$JOB_TMP"' EXIT
case "$(stat -f -c %T "$JOB_TMP" 2>/dev/null || echo unknown)" in
  lustre|gpfs|nfs*|beegfs*|cifs|smb*|fuse*)
    echo "warning: $JOB_TMP is on a network filesystem; ipc:// sockets need a local one" >&2 ;;
esac

if [ "$#" -eq 0 ]; then set -- probexec demo; fi

command -v apptainer >/dev/null || module load apptainer 2>/dev/null || true

# --bind makes the scratch directory visible at the same path inside the container, and
# TMPDIR points the engine's tempfile.mkdtemp() (and so every ipc:// socket) at it.
# --cleanenv keeps the host's Python/conda variables out of the container.
srun --ntasks=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" \
  apptainer exec --cleanenv --bind "$JOB_TMP" --env TMPDIR="$JOB_TMP" "$SIF" "$@"

# --- Shifter variant (e.g. NERSC) ---------------------------------------------------------------
# Pull the Docker image once:  shifterimg pull <registry>/probexec:latest
# then replace the Apptainer lines above by an image request in the header and a shifter call:
#   #SBATCH --image=docker:<registry>/probexec:latest
#   srun shifter --env=TMPDIR=/tmp "$@"
# Inside a Shifter container /tmp is private to the node (a local, per-node file system), so the
# ipc:// sockets can stay there; never point TMPDIR at $SCRATCH (Lustre) or $HOME.
