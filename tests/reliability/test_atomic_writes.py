"""Atomic writes everywhere (issue 11, item 2).

An interrupted write must never leave a file that looks valid. Two kinds of test:

* a static one: every call in ``src/ptyscope`` that writes a file (``open`` for writing,
  ``Path.write_text``, ``h5py.File`` in a writing mode, ``numpy.save``, ``torch.save``,
  ``savefig``, ``ase.io.write``, ...) must write the temporary path of an enclosing
  ``with atomic_path(...)`` (or a handle opened on it), unless :data:`ALLOWED` names it
  with a reason;
* behavioural ones: the main writers, made to fail mid-write or at the rename, leave the
  target absent or as it was, and no temporary file behind.
"""

from __future__ import annotations

import ast
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import ptyscope
from ptyscope.data.dataset import Calibration, Dataset4D
from ptyscope.io.atomic import atomic_path

SOURCE = Path(ptyscope.__file__).resolve().parent

# ---------------------------------------------------------------------------- static audit
#: Functions that always write a file, by their full name after import aliases are
#: resolved, and the position of the argument naming the file written.
ALWAYS_WRITES = {
    "numpy.save": 0,
    "numpy.savez": 0,
    "numpy.savez_compressed": 0,
    "numpy.savetxt": 0,
    "numpy.lib.format.open_memmap": 0,
    "torch.save": 1,
    "ase.io.write": 0,
    "json.dump": 1,
    "pickle.dump": 1,
    "shutil.copy": 1,
    "shutil.copy2": 1,
    "shutil.copyfile": 1,
    "shutil.copytree": 1,
    "shutil.move": 1,
    "tifffile.imwrite": 0,
    "tifffile.imsave": 0,
    "tifffile.TiffWriter": 0,
    "imageio.imwrite": 0,
    "imageio.mimwrite": 0,
    "imageio.v2.imwrite": 0,
    "imageio.v3.imwrite": 0,
    "matplotlib.pyplot.savefig": 0,
    "matplotlib.pyplot.imsave": 0,
    "scipy.io.savemat": 0,
    "os.open": 0,
    "io.FileIO": 0,
}
#: Functions that write another file than the path they are given (they append a suffix
#: to a name without it, and an atomic_path temporary ends in ".tmp"): give them a handle.
SUFFIXING = {"numpy.save", "numpy.savez", "numpy.savez_compressed"}
#: Keyword names of the file argument.
FILE_KEYWORDS = {"file", "f", "fname", "filename", "fp", "fid", "path", "name", "dst", "uri"}
#: Functions that write in some modes: (mode argument position, mode when not given).
MODE_WRITES = {
    "open": (1, "r"),
    "io.open": (1, "r"),
    "gzip.open": (1, "rb"),
    "bz2.open": (1, "rb"),
    "lzma.open": (1, "rb"),
    "tarfile.open": (1, "r"),
    "zipfile.ZipFile": (1, "r"),
    "h5py.File": (1, "r"),
    "numpy.memmap": (2, "r+"),
}
#: Methods (on any object) that write a file: name -> the file is the receiver (-1) or
#: the argument at that position.
METHOD_WRITES = {
    "savefig": 0,
    "imsave": 0,
    "save": 0,  # PIL.Image.save, imageio writers
    "write_text": -1,
    "write_bytes": -1,
    "tofile": 0,  # ndarray.tofile(file)
    "to_csv": 0,
    "to_hdf": 0,
    "to_netcdf": 0,
    "to_zarr": 0,
}
#: (module relative to src/ptyscope, enclosing function, call) -> why it may write
#: outside an atomic_path block. Keep it small.
ALLOWED = {
    ("io/atomic.py", "atomic_path", "open"): (
        "the helper itself: reopens its finished temporary file ('rb+') to fsync it "
        "before the rename"
    ),
    ("physics/fft_backend.py", "_file_lock", "open"): (
        "opens (append, writes nothing) the empty lock file beside the FFTW wisdom file for "
        "flock; the wisdom itself is written with atomic_path"
    ),
}


@dataclass(frozen=True)
class WriteCall:
    """One file-writing call found in a module."""

    module: str
    line: int
    function: str
    call: str
    atomic: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return self.module, self.function, self.call

    def __str__(self) -> str:
        return f"{self.module}:{self.line} in {self.function or '<module>'}: {self.call}"


def _aliases(tree: ast.Module, module: str) -> dict[str, str]:
    """Local name -> full dotted name, from the module's imports (relative ones resolved)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """Full name of ``a.b.c`` when ``a`` is an imported name (or a builtin ``open``)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id in aliases:
        return ".".join([aliases[node.id], *reversed(parts)])
    if node.id == "open" and not parts:
        return "open"
    return None


def _constant_str(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _mode(call: ast.Call, position: int, default: str) -> str | None:
    """The call's mode string; ``None`` when it is not a literal (so it may write)."""
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return _constant_str(keyword.value)
    if len(call.args) > position:
        return _constant_str(call.args[position])
    return default


def _writing_mode(name: str, mode: str | None) -> bool:
    if mode is None:
        return True
    if name == "numpy.memmap":
        return mode in ("r+", "w+", "readwrite", "write")
    if name == "h5py.File":
        return mode != "r"
    return any(flag in mode for flag in "wax+")


def _argument(call: ast.Call, position: int) -> ast.expr | None:
    if position == -1:
        return call.func.value if isinstance(call.func, ast.Attribute) else None
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg in FILE_KEYWORDS), None)


def _plain_name(node: ast.expr | None) -> str | None:
    """``x`` for ``x``, ``str(x)``, ``os.fspath(x)`` or ``Path(x)``; else None (e.g.
    ``tmp.with_suffix(...)`` names another file than ``tmp``)."""
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        func = node.func
        wrapper = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if wrapper in ("str", "fspath", "Path"):
            node = node.args[0]
    return node.id if isinstance(node, ast.Name) else None


def _file_written(call: ast.Call, aliases: dict[str, str]) -> tuple[str, ast.expr | None] | None:
    """(call name, expression of the file written) if ``call`` writes a file, else None."""
    name = _dotted(call.func, aliases)
    if name in ALWAYS_WRITES:
        return name, _argument(call, ALWAYS_WRITES[name])
    if name in MODE_WRITES:
        position, default = MODE_WRITES[name]
        if _writing_mode(name, _mode(call, position, default)):
            return name, _argument(call, 0)
        return None
    if name is not None or not isinstance(call.func, ast.Attribute):
        return None
    method = call.func.attr
    if method == "open":  # Path.open(mode) or an archive's .open(member, mode)
        first = call.args[0] if call.args else None
        mode = _constant_str(first) if _constant_str(first) is not None else _mode(call, 1, "r")
        if _writing_mode("open", mode):
            return ".open", call.func.value
        return None
    if method in METHOD_WRITES:
        return f".{method}", _argument(call, METHOD_WRITES[method])
    return None


def _names(node: ast.AST | None) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node else set()


def _passed_names(node: ast.AST) -> set[str]:
    """Names used as values in ``node``, not as the base of another path: ``h`` in
    ``open(h)`` or ``wrap(h) if c else h``, but not ``tmp`` in ``tmp.with_suffix(".x")``
    or ``tmp / "x"``."""
    derived = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            derived |= _names(sub.value)
        elif isinstance(sub, ast.BinOp):
            derived |= _names(sub)
    return _names(node) - derived


class _Audit(ast.NodeVisitor):
    """Find file-writing calls and whether each writes an atomic_path temporary."""

    def __init__(self, module: str, aliases: dict[str, str]) -> None:
        self.module = module
        self.aliases = aliases
        self.scope: list[str] = []
        # Names bound to an atomic_path temporary ("path") or derived from one ("handle":
        # a file opened on it, a wrapper of that file), innermost block last.
        self.temporaries: list[dict[str, str]] = [{}]
        self.calls: list[WriteCall] = []

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.temporaries.append({})  # a nested function's body runs later
        self.generic_visit(node)
        self.temporaries.pop()
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node)

    def _is_atomic(self, node: ast.expr) -> bool:
        name = _dotted(node.func, self.aliases) if isinstance(node, ast.Call) else None
        return name is not None and name.split(".")[-1] == "atomic_path"

    def visit_With(self, node: ast.With) -> None:
        self._with(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self._with(node)

    def _with(self, node: ast.With | ast.AsyncWith) -> None:
        temporaries = dict(self.temporaries[-1])
        for item in node.items:  # later items see the names bound by earlier ones
            self.temporaries.append(dict(temporaries))
            self.visit(item.context_expr)
            self.temporaries.pop()
            expr = item.context_expr
            kind = "path" if self._is_atomic(expr) else "handle"
            if kind == "path" or _passed_names(expr) & temporaries.keys():
                temporaries |= dict.fromkeys(_names(item.optional_vars), kind)
        self.temporaries.append(temporaries)
        for statement in node.body:
            self.visit(statement)
        self.temporaries.pop()

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assign(node, node.targets)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assign(node, [node.target])

    def _assign(self, node: ast.Assign | ast.AnnAssign, targets: list[ast.expr]) -> None:
        self.generic_visit(node)
        if node.value and _passed_names(node.value) & self.temporaries[-1].keys():
            for target in targets:
                self.temporaries[-1] |= dict.fromkeys(_names(target), "handle")

    def visit_Call(self, node: ast.Call) -> None:
        found = _file_written(node, self.aliases)
        if found is not None:
            name, target = found
            kind = self.temporaries[-1].get(_plain_name(target) or "")
            atomic = kind == "handle" or (kind == "path" and name not in SUFFIXING)
            function = ".".join(self.scope)
            self.calls.append(WriteCall(self.module, node.lineno, function, name, atomic))
        self.generic_visit(node)


def audit_source(
    text: str, module: str = "ptyscope.example", relative: str = "x.py"
) -> list[WriteCall]:
    """Every file-writing call in ``text`` (the source of ``module``)."""
    tree = ast.parse(text)
    audit = _Audit(relative, _aliases(tree, module))
    audit.visit(tree)
    return audit.calls


def audit_package() -> list[WriteCall]:
    calls = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        module = ".".join(("ptyscope", *path.relative_to(SOURCE).with_suffix("").parts))
        calls += audit_source(path.read_text(encoding="utf-8"), module, relative)
    return calls


def test_every_file_write_in_the_package_is_atomic() -> None:
    calls = audit_package()
    offending = [str(c) for c in calls if not c.atomic and c.key not in ALLOWED]
    assert not offending, (
        "file writes outside `with atomic_path(...) as tmp` (write tmp, or a handle opened "
        "on it; or add an entry with a reason to ALLOWED):\n  " + "\n  ".join(offending)
    )
    used = {c.key for c in calls if not c.atomic}
    assert not set(ALLOWED) - used, f"stale ALLOWED entries: {sorted(set(ALLOWED) - used)}"
    assert sum(c.atomic for c in calls) >= 20  # the audit sees the package's writers


VIOLATIONS = [
    "def f(p):\n    open(p, 'w').write('x')",
    "def f(p):\n    with open(p, mode='ab') as h:\n        h.write(b'x')",
    "from pathlib import Path\ndef f(p):\n    Path(p).write_text('x')",
    "import h5py\ndef f(p):\n    with h5py.File(p, 'a') as h:\n        pass",
    "import h5py\ndef f(p, m):\n    h5py.File(p, m)",
    "import numpy as np\ndef f(p, a):\n    np.save(p, a)",
    "from numpy import savez as s\ndef f(p, a):\n    s(p, a=a)",
    "import torch\ndef f(p, s):\n    torch.save(s, p)",
    "def f(fig, p):\n    fig.savefig(p)",
    "import ase.io\ndef f(p, a):\n    ase.io.write(p, a)",
    "import json\ndef f(p, d):\n    with open(p, 'w') as h:\n        json.dump(d, h)",
    "import shutil\ndef f(a, b):\n    shutil.copy(a, b)",
    "import zipfile\ndef f(p):\n    zipfile.ZipFile(p, 'w')",
    "def f(p):\n    p.open('w')",
    # Inside an atomic block, but not writing its temporary:
    "from ptyscope.io.atomic import atomic_path\nimport numpy as np\n"
    "def f(p, q, a):\n    with atomic_path(p) as tmp:\n        np.save(q, a)",
    # numpy.save appends ".npy" to the temporary's name: the target would stay empty.
    "from ptyscope.io.atomic import atomic_path\nimport numpy as np\n"
    "def f(p, a):\n    with atomic_path(p) as tmp:\n        np.save(tmp, a)",
    # Another file than the temporary:
    "from ptyscope.io.atomic import atomic_path\n"
    "def f(p):\n    with atomic_path(p) as tmp:\n        open(tmp.with_suffix('.x'), 'w')",
    "from ptyscope.io.atomic import atomic_path\nimport h5py\n"
    "def f(p):\n    with atomic_path(p) as tmp, h5py.File(tmp.parent / 'x', 'w') as h:\n"
    "        pass",
    # The temporary of an outer function is not the temporary of a nested one:
    "from ptyscope.io.atomic import atomic_path\n"
    "def f(p):\n    with atomic_path(p) as tmp:\n        def g(q):\n            open(q, 'w')",
]
COMPLIANT = [
    "def f(p):\n    open(p).read()\n    open(p, 'rb').read()",
    "import h5py\ndef f(p):\n    h5py.File(p, 'r')\n    h5py.File(p)",
    "import numpy as np\ndef f(p):\n    np.memmap(p, mode='r')\n    np.load(p)",
    "def f(z, m):\n    z.open(m)",  # zipfile.ZipFile.open(member): read
    "from ptyscope.io.atomic import atomic_path\nimport h5py\n"
    "def f(p):\n    with atomic_path(p) as tmp, h5py.File(tmp, 'w') as h:\n        pass",
    "from .atomic import atomic_path\nimport numpy as np\n"
    "def f(p, a):\n    with atomic_path(p) as tmp, open(tmp, 'wb') as h:\n        np.save(h, a)",
    "from ptyscope.io import atomic\nimport torch\n"
    "def f(p, s):\n    with atomic.atomic_path(p) as t:\n        torch.save(s, f=str(t))",
    "from ptyscope.io.atomic import atomic_path\n"
    "def f(p, fig):\n    with atomic_path(p) as tmp:\n        fig.savefig(tmp, format='png')",
    "from ptyscope.io.atomic import atomic_path\nimport torch\n"
    "def f(p, s, w):\n    with atomic_path(p) as tmp, open(tmp, 'wb') as h:\n"
    "        sink = w(h) if s else h\n        torch.save(s, sink)",
]


@pytest.mark.parametrize("source", VIOLATIONS)
def test_audit_flags_a_non_atomic_write(source: str) -> None:
    calls = audit_source(source, "ptyscope.io.example")
    assert calls and not all(c.atomic for c in calls), calls


@pytest.mark.parametrize("source", COMPLIANT)
def test_audit_accepts_reads_and_atomic_writes(source: str) -> None:
    calls = audit_source(source, "ptyscope.io.example")
    assert all(c.atomic for c in calls), calls


# ---------------------------------------------------------------------------- helpers
def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic_path (``.<name>.XXXX.tmp``) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob(".*.tmp"))


def _dataset(scan: tuple[int, int] = (3, 4), det: int = 16, seed: int = 0) -> Dataset4D:
    """Small 4D dataset: a bright-field disk (radius det/4) with Poisson-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:det, :det] - (det - 1) / 2
    disk = (np.hypot(y, x) < det / 4).astype(np.float32)
    data = disk * rng.uniform(90, 110, size=(*scan, det, det)).astype(np.float32)
    calibration = Calibration(
        energy_ev=300e3,
        scan_step_ang=(0.5, 0.5),
        detector_pixel_inv_ang=(0.05, 0.05),
        semiangle_mrad=20.0,
    )
    return Dataset4D(data, calibration)


def _refuse(src: Any, dst: Any) -> None:
    """Stands in for ``os.replace``: the final rename fails (full disk, lost server)."""
    raise OSError(f"rename {src} -> {dst} refused")


def _crash_dataset_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dataset copy dies after its first block of scan rows (a crash mid-write)."""
    original = Dataset4D.iter_scan_rows

    def dying(self: Dataset4D, *args: Any, **kwargs: Any) -> Iterator[Any]:
        rows = original(self, *args, **kwargs)
        yield next(iter(rows))
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(Dataset4D, "iter_scan_rows", dying)


# ---------------------------------------------------------------------------- atomic_path
def test_atomic_path_gives_the_permissions_a_plain_write_would(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.txt"
    with atomic_path(fresh) as tmp:
        tmp.write_text("new")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600
    fresh.chmod(0o640)
    with atomic_path(fresh) as tmp:
        tmp.write_text("again")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640  # a replaced file keeps its mode


# ---------------------------------------------------------------------------- simulation
def test_simulation_output_is_absent_or_old_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptyscope.config import SimulationConfig
    from ptyscope.io.datafile import read_dataset
    from ptyscope.simulation.run import run_simulation

    config = SimulationConfig.model_validate(
        {
            "output": tmp_path / "sim.h5",
            "specimen": {"kind": "srtio3_slab", "repeat_xy": [1, 1], "thickness_ang": 3.905},
            "scan": {"shape": [2, 2], "step_ang": [0.9, 0.9]},
            "sampling": {"pixel_ang": 0.2, "slice_thickness_ang": 1.9525},
        }
    )
    target = run_simulation(config, progress=False)
    old = read_dataset(target).data.copy()
    _crash_dataset_copies(monkeypatch)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        run_simulation(config.model_copy(update={"seed": 1}), progress=False)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_dataset(target).data, old)
    assert _leftovers(tmp_path) == []


def test_data_and_tilt_series_files_never_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptyscope.io.datafile import write_dataset, write_tilt_series

    _crash_dataset_copies(monkeypatch)
    data, series = tmp_path / "data.h5", tmp_path / "series.h5"
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_dataset(data, _dataset())
    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_tilt_series(series, [_dataset(), _dataset(seed=1)], np.zeros((2, 3)))
    assert not data.exists() and not series.exists()
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- preprocess
def _preprocess_config(folder: Path) -> Any:
    from ptyscope.config import PreprocessConfig

    source = folder / "scan.npy"
    np.save(source, np.asarray(_dataset((4, 4), 24).data))
    return PreprocessConfig.model_validate(
        {
            "output": folder / "pre.h5",
            "input": {
                "path": source,
                "energy_ev": 300e3,
                "scan_step_ang": [0.5, 0.5],
                "semiangle_mrad": 20.0,
                "detector_pixel_mrad": [3.0, 3.0],
            },
            "steps": {
                "repair_bad_pixels": False,
                "calibrate_from_bf_disk": False,
                "correct_descan": False,
                "find_scan_rotation": False,
            },
        }
    )


def test_preprocess_outputs_are_old_or_absent_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    from ptyscope.data.pipeline import run_preprocess

    config = _preprocess_config(tmp_path)
    _crash_dataset_copies(monkeypatch)
    with pytest.raises(RuntimeError, match="killed mid-write"):  # the dataset copy dies
        run_preprocess(config)
    assert not config.output.exists()
    assert _leftovers(tmp_path) == []

    monkeypatch.undo()
    report = run_preprocess(config)
    old_inode, old_figure = report.output.stat().st_ino, report.figure.read_bytes()

    def half_png(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        raise RuntimeError("killed while saving the figure")

    monkeypatch.setattr(Figure, "savefig", half_png)
    with pytest.raises(RuntimeError, match="killed while saving the figure"):
        run_preprocess(config)
    # the dataset was replaced whole (a new file; its bytes may equal the old ones when
    # both writes fall in the same second of HDF5's object timestamps) ...
    assert report.output.stat().st_ino != old_inode
    assert report.figure.read_bytes() == old_figure  # ... the figure is the old one
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- report
def test_report_rewrite_interrupted_leaves_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    from ptyscope.report.reconstruction_report import write_report
    from tests.report.test_reconstruction_report import ALWAYS, make_result

    result = make_result(tmp_path / "result.h5", states=1, slices=2, modes=1)
    folder = tmp_path / "report"
    folder.mkdir()
    index = folder / "index.html"
    index.write_text("<html>the report of an earlier run</html>")
    for name in ALWAYS:
        (folder / name).write_bytes(b"old " + name.encode())

    calls = 0
    original = Figure.savefig

    def dies_on_third_figure(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            Path(fname).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
            raise RuntimeError("killed while saving a figure")
        original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", dies_on_third_figure)
    with pytest.raises(RuntimeError, match="killed while saving a figure"):
        write_report(result, folder)
    # The old page is gone (it would show a mix of old and new figures); every figure is
    # either whole and new or the old one, never the half-written one.
    assert not index.exists()
    contents = [(folder / name).read_bytes() for name in ALWAYS]
    new = [c for c in contents if c.startswith(b"\x89PNG") and c.endswith(b"IEND\xaeB`\x82")]
    old = [c for c in contents if c.startswith(b"old ")]
    assert len(new) == 2 and len(old) == len(ALWAYS) - 2
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- atoms
@pytest.mark.parametrize("suffix", ["xyz", "cif"])
def test_atoms_file_is_old_after_a_crash_or_a_failed_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    import ase.io

    from ptyscope.tomography.atoms import write_atoms

    path = tmp_path / f"atoms.{suffix}"
    positions = np.array([[1.0, 1.0, 1.0], [2.5, 1.0, 1.0], [1.0, 2.5, 2.0]])
    labels = np.array([0, 1, 0])
    write_atoms(path, positions, labels, ["Fe", "Pt"], cell_ang=5.0)
    old = path.read_text()

    def half_written(filename: Any, images: Any, *args: Any, **kwargs: Any) -> None:
        Path(filename).write_text(old[: len(old) // 2])
        raise RuntimeError("killed while writing atoms")

    monkeypatch.setattr(ase.io, "write", half_written)
    with pytest.raises(RuntimeError, match="killed while writing atoms"):
        write_atoms(path, positions + 0.1, labels, ["Fe", "Pt"], cell_ang=5.0)
    assert path.read_text() == old
    monkeypatch.undo()

    monkeypatch.setattr(os, "replace", _refuse)
    with pytest.raises(OSError, match="refused"):
        write_atoms(path, positions + 0.1, labels, ["Fe", "Pt"], cell_ang=5.0)
    assert path.read_text() == old
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- tomography
def _tomography_result() -> Any:
    from ptyscope.tomography.pipeline import TomographyResult

    rng = np.random.default_rng(3)
    angles = np.stack([np.zeros(3), np.array([-30.0, 0.0, 30.0]), np.zeros(3)], axis=1)
    return TomographyResult(
        volume=rng.random((6, 8, 8)),
        voxel_ang=0.5,
        origin_ang=(0.0, 0.0),
        euler_nominal_deg=angles,
        euler_deg=angles,
        shifts_start_ang=np.zeros((3, 2)),
        shifts_ang=np.zeros((3, 2)),
        projections=rng.random((3, 8, 8)),
        weights=np.ones((3, 8, 8)),
        positions_ang=rng.random((4, 3)) * 4,
        labels=np.array([0, 1, 0, 1]),
        metrics={"fsc_0143_ang": 1.5},
    )


def test_tomography_result_is_old_after_a_crash_mid_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptyscope.tomography import pipeline

    path = tmp_path / "tomography.h5"
    result = _tomography_result()
    pipeline._write(path, result, "# config", history=[])
    old = path.read_bytes()

    def dying_dumps(*args: Any, **kwargs: Any) -> str:  # after the volume was written
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(json, "dumps", dying_dumps)
    result.volume = result.volume + 1.0
    with pytest.raises(RuntimeError, match="killed mid-write"):
        pipeline._write(path, result, "# config", history=[])
    monkeypatch.undo()
    assert path.read_bytes() == old
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format"] == pipeline.RESULT_FORMAT
    monkeypatch.setattr(os, "replace", _refuse)
    with pytest.raises(OSError, match="refused"):
        pipeline._write(path, result, "# config", history=[])
    assert path.read_bytes() == old
    assert _leftovers(tmp_path) == []


def test_tilt_manifest_says_whether_the_series_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptyscope.tomography import runner

    path = tmp_path / runner.MANIFEST_NAME
    records = [
        runner.TiltRecord(t, (0.0, 10.0 * t, 0.0), tmp_path / f"tilt_{t:03d}.h5", t)
        for t in range(3)
    ]
    runner._write_manifest(path, tmp_path / "series.h5", "sha", records)
    assert json.loads(path.read_text())["complete"] is False  # all pending
    statuses: list[runner.Status] = ["done", "resumed", "interrupted"]
    done = [
        runner.TiltRecord(r.index, r.euler_deg, r.result, r.seed, status=s)
        for r, s in zip(records, statuses, strict=True)
    ]
    runner._write_manifest(path, tmp_path / "series.h5", "sha", done)
    assert json.loads(path.read_text())["complete"] is False  # one tilt interrupted
    done[2] = runner.TiltRecord(2, (0.0, 20.0, 0.0), records[2].result, 2, status="skipped")
    runner._write_manifest(path, tmp_path / "series.h5", "sha", done)
    old = path.read_text()
    assert json.loads(old)["complete"] is True

    def dying_dumps(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(json, "dumps", dying_dumps)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        runner._write_manifest(path, tmp_path / "series.h5", "sha", records)
    assert path.read_text() == old
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- rename fails
@pytest.mark.parametrize("writer", ["dataset", "csv", "figure"])
def test_a_failed_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    writers: dict[str, tuple[str, Callable[[Path], None]]] = {
        "dataset": ("data.h5", _write_dataset),
        "csv": ("table.csv", _write_csv),
        "figure": ("figure.png", _write_figure),
    }
    name, write = writers[writer]
    path = tmp_path / name
    path.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", _refuse)
    with pytest.raises(OSError, match="refused"):
        write(path)
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def _write_dataset(path: Path) -> None:
    from ptyscope.io.datafile import write_dataset

    write_dataset(path, _dataset())


def _write_csv(path: Path) -> None:
    from ptyscope.analysis.commands import _write_csv

    _write_csv(path, ["a", "b"], [[1, 2.0]])


def _write_figure(path: Path) -> None:
    from matplotlib.figure import Figure

    from ptyscope.report.tomography_figures import save_figure

    figure = Figure(figsize=(1, 1))
    figure.add_subplot().plot([0, 1])
    save_figure(figure, path)
