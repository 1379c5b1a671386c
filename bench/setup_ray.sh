#!/usr/bin/env bash
# Create the separate virtualenv for the Ray Serve baseline (bench/ray_baseline.py).
#
# Ray is a benchmark-only comparison: it is installed from bench/requirements.txt into its own
# venv, made from the same interpreter as the project's .venv, and never into .venv itself.
#
#   bash bench/setup_ray.sh            # -> /tmp/aios-bench-ray (or $AIOS_RAY_VENV)
#   bash bench/setup_ray.sh /some/dir  # -> /some/dir
#
# Prints the path of the venv's python on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${1:-${AIOS_RAY_VENV:-/tmp/aios-bench-ray}}"

# The interpreter behind the project's .venv (its pyvenv.cfg names it), so Ray runs on the
# same Python version as the data plane it is compared with.
base_python=""
if [[ -f "$root/.venv/pyvenv.cfg" ]]; then
    base_python="$(sed -n 's/^executable *= *//p' "$root/.venv/pyvenv.cfg")"
fi
if [[ -z "$base_python" || ! -x "$base_python" ]]; then
    base_python="$(command -v python3)"
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv from $base_python" >&2
    "$base_python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt" >&2
"$venv/bin/python" -c 'import ray, ray.serve; print("ray", ray.__version__)' >&2
echo "$venv/bin/python"
