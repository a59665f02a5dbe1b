#!/usr/bin/env bash
# `python` inside docker/Dockerfile.isaac: Isaac Sim's bundled Python with the environment /isaac-sim/python.sh sets
# up (Isaac Sim 5.1, source/scripts/python/linux-x86_64/python.sh), without two of python.sh's habits:
#   - python.sh runs Python as `$python_exe ... || error_exit`, so every failure becomes exit status 1 (the project's
#     CLIs exit 2 for bad input and for a machine that cannot run Isaac Sim), and it does not exec, so `docker stop`
#     and Ray's signals reach bash, not Python. Here Python replaces this shell: its exit status and signals are its own.
#   - in a container python.sh runs vulkan_check.sh under `set -e`, which exits 1 before Python starts when the
#     container was started without `--gpus all`. Here a failed check is reported, with the likely cause, and Python
#     runs anyway: CPU-only commands work, and the project's own checks say what is missing (exit 2).
# ISAACSIM_PATH (default /isaac-sim), PYTHONEXE and CNSV2_IN_CONTAINER (1/0; default: whether /.dockerenv exists)
# override the paths and the container test, which is how tests/test_docker_files.py runs this without Isaac Sim.

isaac="${ISAACSIM_PATH:-/isaac-sim}"
export CARB_APP_PATH="$isaac/kit" ISAAC_PATH="$isaac" EXP_PATH="$isaac/apps"
# setup_python_env.sh is generated for python.sh, which defines SCRIPT_DIR before sourcing it.
SCRIPT_DIR="$isaac"
# shellcheck source=/dev/null
source "$isaac/setup_python_env.sh"

in_container="${CNSV2_IN_CONTAINER:-}"
if [ -z "$in_container" ]; then
    if [ -f /.dockerenv ]; then in_container=1; else in_container=0; fi
fi
if [ "$in_container" = 1 ] && [ -f "$isaac/vulkan_check.sh" ]; then
    if ! bash "$isaac/vulkan_check.sh"; then
        echo "cnsv2: Isaac Sim's Vulkan check failed (message above): this container sees no NVIDIA driver, so" \
            "Isaac Sim cannot render here. Start the container with --gpus all (NVIDIA Container Toolkit) on an" \
            "RTX GPU. Python runs anyway; \`python -m sim.isaac_check\` names what is missing." >&2
    fi
fi

export RESOURCE_NAME="IsaacSim"
if [ -f "$isaac/kit/libcarb.so" ]; then
    export LD_PRELOAD="$isaac/kit/libcarb.so"  # python.sh's workaround for a libcarb.so that is not found
fi
exec "${PYTHONEXE:-$isaac/kit/python/bin/python3}" "$@"
