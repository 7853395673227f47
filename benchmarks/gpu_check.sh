#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py): sets up .venv if missing, then trains the
# VOC-shaped U2PL configuration in fp32, bf16 and fp16 on one GPU, evaluates and exports it, and prints
# one JSON line. --dry-run runs the same code on the CPU. Sized for under 8 minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s venv >/dev/null
exec .venv/bin/python benchmarks/gpu_check.py "$@"
