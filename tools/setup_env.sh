#!/usr/bin/env bash
# Create or update ptyscope's local virtual environment.
#
#   tools/setup_env.sh VENV_DIR [EXTRAS]     e.g. tools/setup_env.sh .venv dev
#
# torch is installed first, and the right build is chosen here:
#   * a machine with a working NVIDIA driver (nvidia-smi -L lists a GPU) gets the default
#     PyPI build, which is CUDA-enabled on Linux;
#   * any other machine gets a CPU-only build and never downloads CUDA wheels: first the
#     pinned CPU wheel if one is reachable through pip's configured find-links (as on the
#     project's build machines), otherwise PyTorch's CPU wheel index.
# The package itself is then installed in editable mode; its `torch>=2.4` requirement is
# already satisfied, so pip leaves the chosen build alone.
# Override the choice with PTYSCOPE_TORCH=cpu|cuda.
set -euo pipefail

venv="${1:-.venv}"
extras="${2:-}"
cpu_torch_version="${PTYSCOPE_CPU_TORCH_VERSION:-2.13.0}"
cpu_index="${PTYSCOPE_CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      python_bin="$candidate"
      break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "setup: ptyscope needs Python >= 3.11; none was found on PATH (set PYTHON=...)." >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv with $python_bin"
  "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

want="${PTYSCOPE_TORCH:-}"
if [ -z "$want" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    want=cuda
  else
    want=cpu
  fi
fi

have=$("$venv/bin/python" - <<'PY' 2>/dev/null || true
try:
    import torch
except Exception:
    print("none")
else:
    print("cuda" if torch.version.cuda else "cpu")
PY
)

if [ "$have" = "$want" ]; then
  echo "setup: torch ($have build) already installed"
elif [ "$want" = cuda ]; then
  echo "setup: NVIDIA GPU found; installing a CUDA build of torch"
  "${pip[@]}" install -q "torch>=2.4"
else
  echo "setup: no NVIDIA GPU; installing a CPU-only build of torch"
  if [ "$have" = cuda ]; then
    "${pip[@]}" uninstall -q -y torch
  fi
  # The pinned CPU wheel, if pip's find-links can see it (no index is consulted for it).
  if "${pip[@]}" install -q --no-index --no-deps "torch==${cpu_torch_version}" 2>/dev/null; then
    "${pip[@]}" install -q "torch==${cpu_torch_version}"   # its small pure-Python deps
  else
    "${pip[@]}" install -q torch --index-url "$cpu_index" --extra-index-url https://pypi.org/simple
  fi
fi

target="."
[ -n "$extras" ] && target=".[${extras}]"
echo "setup: installing ptyscope${extras:+[$extras]} (editable) into $venv"
"${pip[@]}" install -q -e "$target"

"$venv/bin/python" - <<'PY'
import torch
import ptyscope
print(f"setup: ptyscope {ptyscope.__version__}, torch {torch.__version__}, "
      f"CUDA available: {torch.cuda.is_available()}")
PY
