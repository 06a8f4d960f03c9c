#!/usr/bin/env bash
# Create benchmarks/.venvs/ptyrad: a separate Python 3.11 environment holding
# PtyRAD 1.0.0 on the CPU build of torch 2.13.0, for the peer benchmark
# (benchmarks/peers/run_ptyrad.py).  Idempotent: re-running only fills in what
# is missing.  See benchmarks/peers/README.md.
#
# Why not just `pip install ptyrad`: ptyrad requires `torch>=2.4` and
# `torchvision` (plus jupyter, optuna, accelerate, ...).  A bare resolve pulls
# the registry's newest CUDA torch (several GB), and there is no CPU build of
# torchvision; the PyPI torchvision wheel fails to import next to the CPU
# torch ("operator torchvision::nms does not exist").  So: torch==2.13.0 first
# (the CPU wheel on this machine), then ptyrad with --no-deps and an explicit
# list of what it imports at run time, then a tiny `torchvision` stand-in that
# provides the one function PtyRAD uses, transforms.functional.gaussian_blur,
# computed the same way as torchvision's tensor implementation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PTYRAD_VENV:-$ROOT/benchmarks/.venvs/ptyrad}"
PY_BOOT="${PYTHON311:-python3.11}"
TORCH_VERSION="2.13.0"
PTYRAD_VERSION="1.0.0"
# Run-time imports of ptyrad 1.0.0 (its other requirements -- jupyter, optuna,
# accelerate, scikit-learn, zarr -- are only imported lazily by features the
# benchmark does not use: notebooks, hyper-tuning, multi-GPU, k-means batch
# grouping, .zarr input).
DEPS=(numpy scipy h5py matplotlib pydantic PyYAML tifffile)

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup_ptyrad] creating $VENV with $PY_BOOT"
    mkdir -p "$(dirname "$VENV")"
    "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "[setup_ptyrad] $VENV is not Python 3.11; remove it and re-run" >&2; exit 1; }

# pip, quiet, without the local-index noise; fails (set -e) when pip fails.
pip_q() {
    local log rc=0
    log="$(mktemp)"
    "$PY" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1 || rc=$?
    grep -v "is neither a file nor a directory" "$log" >&2 || true
    rm -f "$log"
    return "$rc"
}
torch_version() { "$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true; }

# 1. torch, exactly 2.13.0 (the local CPU wheel), before anything that depends on it.
case "$(torch_version)" in
    "$TORCH_VERSION"+cpu|"$TORCH_VERSION") ;;
    *) echo "[setup_ptyrad] installing torch==$TORCH_VERSION"
       pip_q install "torch==$TORCH_VERSION" ;;
esac
case "$(torch_version)" in
    *+cpu) ;;
    *) echo "[setup_ptyrad] torch is '$(torch_version)', expected the CPU build of $TORCH_VERSION" >&2; exit 1 ;;
esac

# 2. PtyRAD's run-time dependencies, with torch pinned so nothing can replace it.
CONSTRAINTS="$(mktemp)"; trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
pip_q install -c "$CONSTRAINTS" "${DEPS[@]}"

# 3. ptyrad itself, without its declared dependencies.
if [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("ptyrad"))' 2>/dev/null || true)" != "$PTYRAD_VERSION" ]; then
    echo "[setup_ptyrad] installing ptyrad==$PTYRAD_VERSION (--no-deps)"
    pip_q install --no-deps "ptyrad==$PTYRAD_VERSION"
fi

# 3b. ptyrad 1.0.0 declares Python >=3.10 but one line of plotting/basic.py
#     nests same-kind quotes in an f-string, which only Python >=3.12 parses;
#     the CPU torch wheel here is cp311-only, so swap those quotes (a plotting
#     title, not used by the benchmark, but the module is imported by the solver).
"$PY" - "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ptyrad/plotting/basic.py" <<'PYEOF'
import sys
path = sys.argv[1]
src = open(path).read()
bad = "{lr_iters['niter'][-1]}'"
if bad in src:
    open(path, "w").write(src.replace(bad, '{lr_iters["niter"][-1]}\''))
    print("[setup_ptyrad] patched an f-string in ptyrad/plotting/basic.py for Python 3.11")
PYEOF
"$PY" -m compileall -q "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ptyrad" >/dev/null \
    || { echo "[setup_ptyrad] ptyrad does not compile under $("$PY" -V)" >&2; exit 1; }

# 4. The torchvision stand-in (only gaussian_blur, as torchvision computes it
#    for tensors: normalised 1-D Gaussians, reflect padding, depthwise conv2d).
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if "$PY" -m pip show -q torchvision >/dev/null 2>&1; then
    echo "[setup_ptyrad] removing the real torchvision (it does not import with CPU torch)"
    pip_q uninstall -y torchvision
fi
mkdir -p "$SITE/torchvision/transforms"
cat > "$SITE/torchvision/__init__.py" <<'PYEOF'
"""Minimal stand-in for torchvision, written by benchmarks/peers/setup_ptyrad.sh.

PtyRAD imports only torchvision.transforms.functional.gaussian_blur; the real
torchvision has no CPU build that imports next to the CPU torch here.
"""
__version__ = "0.0.0+ptyscope-shim"
PYEOF
cat > "$SITE/torchvision/transforms/__init__.py" <<'PYEOF'
PYEOF
cat > "$SITE/torchvision/transforms/functional.py" <<'PYEOF'
"""gaussian_blur for tensors, numerically the same recipe as torchvision's."""
import torch
import torch.nn.functional as F


def _kernel1d(size, sigma, dtype, device):
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(img, kernel_size, sigma=None):
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img should be a Tensor, got {type(img)}")
    ks = [kernel_size, kernel_size] if isinstance(kernel_size, int) else list(kernel_size)
    if len(ks) == 1:
        ks = ks * 2
    if len(ks) != 2 or any(k % 2 == 0 or k < 0 for k in ks):
        raise ValueError(f"kernel_size should be odd and positive, got {kernel_size}")
    if sigma is None:
        sig = [k * 0.15 + 0.35 for k in ks]
    elif isinstance(sigma, (int, float)):
        sig = [float(sigma)] * 2
    else:
        sig = list(sigma) * 2 if len(sigma) == 1 else list(sigma)
    if len(sig) != 2 or any(s <= 0 for s in sig):
        raise ValueError(f"sigma should be positive, got {sigma}")
    if img.ndim < 2:
        raise TypeError("img should have at least 2 dimensions")
    dtype = img.dtype if torch.is_floating_point(img) else torch.float32
    kx = _kernel1d(ks[0], sig[0], dtype, img.device)
    ky = _kernel1d(ks[1], sig[1], dtype, img.device)
    kernel = torch.mm(ky[:, None], kx[None, :])
    kernel = kernel.expand(img.shape[-3], 1, kernel.shape[0], kernel.shape[1])
    out_dtype = img.dtype
    squeeze = img.ndim < 4
    x = img.unsqueeze(0) if squeeze else img
    if x.dtype != kernel.dtype:
        x = x.to(kernel.dtype)
    x = F.pad(x, [ks[0] // 2, ks[0] // 2, ks[1] // 2, ks[1] // 2], mode="reflect")
    x = F.conv2d(x, kernel, groups=x.shape[-3])
    if squeeze:
        x = x.squeeze(0)
    if x.dtype != out_dtype:
        if out_dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
            x = torch.round(x)
        x = x.to(out_dtype)
    return x
PYEOF

# 5. Check: the right torch, ptyrad imports, and nothing pulled CUDA packages.
"$PY" - <<'PYEOF'
import importlib.metadata as md
import torch, ptyrad, torchvision
from ptyrad.solver import reconstruction  # noqa: F401  (imports core, constraints, losses)
assert torch.__version__.endswith("+cpu"), torch.__version__
cuda = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith(("nvidia-", "triton")))
assert not cuda, f"CUDA packages crept in: {cuda}"
print(f"[setup_ptyrad] ok: ptyrad {md.version('ptyrad')}, torch {torch.__version__}, torchvision {torchvision.__version__}")
PYEOF
echo "[setup_ptyrad] installed in $VENV:"
"$PY" -m pip --disable-pip-version-check list --format=freeze 2>/dev/null | sed 's/^/    /'
