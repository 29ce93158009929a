"""Packaging: fastrnn without its optional extras (triton), the dependency lists, and the guard
that drops numba's cached kernels when the sources they were compiled from changed
(kernels/numba/cache_guard.py)."""

import ast
import os
import pathlib
import stat
import subprocess
import sys
import textwrap

import pytest

from fastrnn.kernels.numba import cache_guard

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = pathlib.Path(cache_guard.PACKAGE_DIR)


def _python(code, env_update=None, prelude="", timeout=300):
    env = dict(os.environ, **(env_update or {}))
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ without triton

# sys.modules["triton"] = None makes every `import triton` (and triton.language) fail as if
# triton were not installed, and importlib.util.find_spec("triton") answer None.
NO_TRITON = 'import sys; sys.modules["triton"] = None\n'


def test_fastrnn_works_without_triton():
    code = """
        import torch
        import fastrnn
        import fastrnn.kernels.triton as tk

        registry = getattr(fastrnn, "dispatch", None) or getattr(fastrnn, "backends")
        available = registry.available(torch.device("cpu"), torch.float32)
        assert "triton" not in available and "numba" in available, available
        assert not tk.supports("cpu", torch.float32) and not tk.supports("cuda", torch.float16)
        print("REASON", tk.unavailable_reason())
        print("UNSUPPORTED", tk.unsupported_reason("cpu", torch.float32))
        print("EXPLAIN", tk.explain("lstm", 4, 2, 8, device="cpu"))
        x = torch.randn(5, 2, 3)
        try:
            fastrnn.GRU(3, 4, backend="triton")(x)
        except RuntimeError as e:
            print("MODULE", e)
        try:
            tk.rnn_forward(torch.zeros(2, 1, 4), torch.zeros(4, 4), torch.zeros(1, 4), None,
                           False, "tanh", False)
        except RuntimeError as e:
            print("CALL", e)
        out, _ = fastrnn.GRU(3, 4, backend="numba")(x)
        assert out.shape == (5, 2, 4)
        out, _ = fastrnn.LSTM(3, 4)(x)
        assert out.shape == (5, 2, 4)
        assert sys.modules["triton"] is None  # nothing got past the block
        print("OK")
        """
    r = _python(code, prelude=NO_TRITON)
    assert r.returncode == 0, r.stderr
    hint = "triton is not installed: pip install fastrnn[gpu]"
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert lines["REASON"] == hint
    assert lines["UNSUPPORTED"].startswith(hint)
    assert hint in lines["EXPLAIN"] and lines["EXPLAIN"].startswith("triton: not used")
    assert hint in lines["MODULE"] and "numba" in lines["MODULE"]
    assert hint in lines["CALL"] and "triton is not available" in lines["CALL"]
    assert r.stdout.rstrip().endswith("OK")


def test_triton_tests_skip_without_triton():
    # Every test module collects without triton; the triton ones skip as a whole.
    code = """
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs",
                              "tests/test_triton_kernels.py", "tests/test_triton_gpu.py"]))
        """
    r = _python(code, prelude=NO_TRITON)
    # Both skipped whole at import, no test is collected: pytest's exit code 5.
    assert r.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, r.stdout + r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert "2 skipped" in summary and "passed" not in summary and "error" not in summary, summary


# The modules that are triton: the kernels themselves, imported by kernels/triton/__init__.py only
# on first use.
TRITON_MODULES = ("launchers", "step_kernels", "persistent_kernels", "activations", "cell_updates",
                  "gate_tiles", "live_steps")


def test_nothing_else_needs_triton():
    # Every fastrnn module (the triton kernels aside) and every test module imports without
    # triton. Failures for other reasons are the business of those modules' own tests.
    code = """
        import importlib, pkgutil, sys, traceback
        import fastrnn
        import fastrnn.kernels
        sys.path.insert(0, "tests")
        found = [*pkgutil.walk_packages(fastrnn.__path__, "fastrnn."),
                 *pkgutil.walk_packages(fastrnn.kernels.__path__, "fastrnn.kernels.")]
        names = [m.name for m in found if m.name != "fastrnn.__main__"
                 and not (m.name.startswith("fastrnn.kernels.triton.")
                          and m.name.rsplit(".", 1)[-1] in TRITON_MODULES)]
        assert "fastrnn.kernels.triton" in names and "fastrnn.bench.cli" in names
        names += sorted(p[:-3] for p in os.listdir("tests") if p.endswith(".py")
                        and p not in ("test_triton_kernels.py", "test_triton_gpu.py"))
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as exc:
                text = "".join(traceback.format_exception(exc))
                if "triton" in text.replace("fastrnn.kernels.triton", ""):
                    print("NEEDS TRITON", name, text)
        print("IMPORTED", len(names))
        """
    r = _python(code, prelude=NO_TRITON + "import os\n"
                f"TRITON_MODULES = {TRITON_MODULES!r}\n")
    assert r.returncode == 0, r.stderr
    assert "NEEDS TRITON" not in r.stdout, r.stdout
    assert int(r.stdout.split("IMPORTED")[-1]) > 40


def _pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_dependencies():
    project = _pyproject()["project"]
    names = [req.split(";")[0].split(">")[0].split("=")[0].strip()
             for req in project["dependencies"]]
    assert "triton" not in names and "scipy" not in names
    extras = project["optional-dependencies"]
    assert any(req.startswith("triton") for req in extras["gpu"])
    assert any(req.startswith("scipy") for req in extras["test"])  # test_numba_activations
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert '".[test,bench,gpu]"' in setup  # CI runs the triton kernels under the interpreter


# ------------------------------------------------------------------ numba's cache guard


@pytest.fixture
def package(tmp_path):
    """A stand-in for kernels/numba: two kernel modules and a leaf, and a cache directory with
    entries of numba's kinds and a Python .pyc beside them."""
    pkg = tmp_path / "numba"
    pkg.mkdir()
    (pkg / "linalg.py").write_text("def product(): return 1\n")
    (pkg / "lstm.py").write_text("from .linalg import product\n")
    (pkg / "launch.py").write_text("from .lstm import *\n")
    cache = pkg / "__pycache__"
    cache.mkdir()
    for name in ("lstm.step-10.py311.nbi", "lstm.step-10.py311.1.nbc", "linalg.product-1.py311.nbi",
                 "lstm.cpython-311.pyc"):
        (cache / name).write_bytes(b"x")
    return pkg


def _cache_files(cache):
    return sorted(p.name for p in cache.iterdir() if p.suffix in (".nbi", ".nbc"))


def _stamp(cache):
    return (cache / cache_guard.STAMP_NAME).read_text().strip()


def test_stale_stamp_clears_cache(package):
    cache = package / "__pycache__"
    (cache / cache_guard.STAMP_NAME).write_text("stale\n")
    assert cache_guard.guard(str(package), [str(cache)]) == [str(cache)]
    assert _cache_files(cache) == []
    assert (cache / "lstm.cpython-311.pyc").exists()  # only numba's files go
    assert _stamp(cache) == cache_guard.fingerprint(str(package))
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


def test_missing_stamp_clears_cache(package):
    # A cache from before the guard (or whose stamp was lost) cannot be trusted either.
    cache = package / "__pycache__"
    assert cache_guard.guard(str(package), [str(cache)]) == [str(cache)]
    assert _cache_files(cache) == []
    assert _stamp(cache) == cache_guard.fingerprint(str(package))


def test_unchanged_fingerprint_keeps_cache(package):
    cache = package / "__pycache__"
    before = _cache_files(cache)
    (cache / cache_guard.STAMP_NAME).write_text(cache_guard.fingerprint(str(package)) + "\n")
    assert cache_guard.guard(str(package), [str(cache)]) == []
    assert _cache_files(cache) == before and len(before) == 3


def test_edit_of_a_callee_clears_the_callers_cache(package):
    # What numba alone misses: lstm.py is unchanged, the linalg.py it inlines is not.
    cache = package / "__pycache__"
    cache_guard.guard(str(package), [str(cache)])
    (cache / "lstm.step-10.py311.nbi").write_bytes(b"x")
    (package / "linalg.py").write_text("def product(): return 2\n")
    assert cache_guard.guard(str(package), [str(cache)]) == [str(cache)]
    assert _cache_files(cache) == []


def test_fingerprint_covers_sources_and_versions(package, monkeypatch):
    import numba
    import numpy

    base = cache_guard.fingerprint(str(package))
    assert cache_guard.fingerprint(str(package)) == base
    (package / "launch.py").write_text("# a leaf: nothing compiled depends on it\n")
    assert cache_guard.fingerprint(str(package)) == base
    (package / "notes.txt").write_text("not a source\n")
    assert cache_guard.fingerprint(str(package)) == base
    monkeypatch.setattr(numba, "__version__", numba.__version__ + "+other")
    assert cache_guard.fingerprint(str(package)) != base
    monkeypatch.undo()
    monkeypatch.setattr(numpy, "__version__", numpy.__version__ + "+other")
    assert cache_guard.fingerprint(str(package)) != base
    monkeypatch.undo()
    (package / "simd.py").write_text("WIDTH = 8\n")  # a new module counts
    assert cache_guard.fingerprint(str(package)) != base


def test_shared_sources_count(tmp_path):
    pkg = tmp_path / "kernels" / "numba"
    pkg.mkdir(parents=True)
    (pkg / "linalg.py").write_text("from ..tuning import MACHINE\n")
    base = cache_guard.fingerprint(str(pkg))
    (tmp_path / "kernels" / "tuning.py").write_text("BLOCK = 1\n")
    with_tuning = cache_guard.fingerprint(str(pkg))
    assert with_tuning != base
    (tmp_path / "kernels" / "tuning.py").write_text("BLOCK = 2\n")
    assert cache_guard.fingerprint(str(pkg)) != with_tuning


def test_read_only_cache_does_not_raise(package, monkeypatch):
    # What a read-only install gives a user: nothing can be removed or written. chmod alone
    # does not stop root, so the calls also fail as they would.
    cache = package / "__pycache__"
    (cache / cache_guard.STAMP_NAME).write_text("stale\n")
    before = _cache_files(cache)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    real_open = open

    def open_read_only(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            denied()
        return real_open(path, mode, *args, **kwargs)

    os.chmod(cache, stat.S_IRUSR | stat.S_IXUSR)
    try:
        monkeypatch.setattr(os, "remove", denied)
        monkeypatch.setattr(os, "replace", denied)
        monkeypatch.setattr(cache_guard, "open", open_read_only, raising=False)
        cache_guard.guard(str(package), [str(cache)])
        monkeypatch.undo()
    finally:
        os.chmod(cache, stat.S_IRWXU)
    assert _cache_files(cache) == before
    assert _stamp(cache) == "stale"


def test_files_removed_by_another_process_are_tolerated(package, monkeypatch):
    cache = package / "__pycache__"
    real_remove = os.remove

    def raced(path):
        real_remove(path)
        raise FileNotFoundError(2, "No such file or directory", path)

    monkeypatch.setattr(os, "remove", raced)
    assert cache_guard.guard(str(package), [str(cache)]) == [str(cache)]
    monkeypatch.undo()
    assert _cache_files(cache) == []
    assert _stamp(cache) == cache_guard.fingerprint(str(package))


def test_missing_and_unreadable_places_are_skipped(package, tmp_path):
    missing = tmp_path / "nowhere"
    assert cache_guard.guard(str(package), [str(missing)]) == []
    assert not missing.exists()
    assert cache_guard.guard(str(tmp_path / "no-package"), None) == []  # scandir fails


def test_unexpected_errors_only_warn(package, monkeypatch):
    def broken(package_dir):
        raise ValueError("numba changed")

    monkeypatch.setattr(cache_guard, "fingerprint", broken)
    with pytest.warns(RuntimeWarning, match="numba cache check skipped"):
        assert cache_guard.guard(str(package), [str(package / "__pycache__")]) == []


def test_cache_dirs_are_numbas():
    # The directories the guard looks at include the one numba put this package's kernels in.
    from fastrnn.kernels.numba import activations

    dispatchers = [obj for obj in vars(activations).values()
                   if getattr(obj, "_cache", None) is not None
                   and hasattr(obj._cache, "_cache_path")]
    if not dispatchers:
        pytest.skip("numba's dispatchers no longer expose _cache._cache_path")
    assert dispatchers[0]._cache._cache_path in cache_guard.cache_dirs()


def test_numba_cache_dir_is_guarded(tmp_path, monkeypatch):
    # With NUMBA_CACHE_DIR set, the import clears that directory's stale entries of this package.
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    cache = pathlib.Path(cache_guard.cache_dirs()[0])
    monkeypatch.undo()
    assert cache.parent == tmp_path and cache.is_dir()  # made, to take its stamp early
    (cache / "lstm.step-10.py311.nbi").write_bytes(b"x")
    (cache / cache_guard.STAMP_NAME).write_text("stale\n")
    r = _python("import fastrnn.kernels.numba", {"NUMBA_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert _cache_files(cache) == []
    assert _stamp(cache) == cache_guard.fingerprint()


def _relative_imports(path):
    """(level, module name) of every relative import in the file: `from . import a` gives
    (1, "a"), `from .b import c` (1, "b"), `from ..c import d` (2, "c")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                found.add((node.level, node.module.split(".")[0]))
            else:
                found.update((node.level, alias.name) for alias in node.names)
    return found


_COMPILERS = {"njit", "jit", "cfunc", "vectorize", "guvectorize", "stencil", "overload",
              "overload_method", "overload_attribute", "intrinsic", "register_jitable",
              "generated_jit"}


def _compiles(path):
    """Whether the module defines compiled code: calls (or decorates with) one of numba's."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in _COMPILERS:
                return True
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            for dec in node.decorator_list:
                name = dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", None)
                if name in _COMPILERS:
                    return True
    return False


def test_leaves_and_shared_sources_are_complete():
    # LEAVES may be left out of the fingerprint only while they define no compiled code and only
    # other LEAVES import them; every module outside the package that one of the others imports
    # must be in SHARED_SOURCES.
    assert _compiles(PACKAGE / "lstm.py") and _compiles(PACKAGE / "simd.py")
    for path in sorted(PACKAGE.glob("*.py")):
        leaf = path.name in cache_guard.LEAVES
        assert not (leaf and _compiles(path)), path.name
        for level, name in _relative_imports(path):
            if level == 1 and not leaf:
                assert f"{name}.py" not in cache_guard.LEAVES, (path.name, name)
            elif level == 2 and not leaf:
                assert f"{name}.py" in cache_guard.SHARED_SOURCES, (path.name, name)
    init = (PACKAGE / "__init__.py").read_text()
    assert "cache_guard.guard()" in init
    assert init.index("cache_guard.guard()") < init.index("from .launch import")
