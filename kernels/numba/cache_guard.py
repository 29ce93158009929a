"""Drop numba's cached kernels of this package when any of its sources changed.

Numba validates a cached function (``cache=True``) against the one source file that defines it
(its modification time; since numba 0.68 a hash of its contents), never against the files it
calls into or reads constants from. The kernels here inline functions of other modules
(activations, simd, linalg) and freeze module constants (config, linalg's size rules), so after
an edit to one module - in a checkout, or an upgrade that leaves the old cache behind (pip
removes only the files it installed) - the cached kernels of the others would keep running
the old code.

guard() keeps a fingerprint of what the compiled code depends on (the contents of
kernels/numba/*.py but LEAVES, the modules none of it depends on; of kernels/tuning.py and
kernels/cpu.py, whose values the kernels freeze; the numba and numpy versions) in a stamp file
beside the cache files, and where the stamp differs or is missing removes the package's
*.nbi/*.nbc files and writes the new stamp: numba then compiles afresh on first call, once.
The directories looked at are the ones numba's locators (numba/core/caching.py) cache this
package's functions in: ``<NUMBA_CACHE_DIR>/numba_<hash>`` when that setting is made,
``__pycache__`` next to these files, and the user-wide ``~/.cache/numba/numba_<hash>`` numba
falls back to when ``__pycache__`` is read-only. Each of them holds this package's files only.

It must never fail an import: a directory that cannot be read or written (a read-only install,
a cache another process is clearing at the same moment) is silently left as it is (OSError),
and anything unexpected becomes a warning. Cost: reading and hashing ~3700 lines (155 KB) and a
few stats, ~0.6 ms at import (0.25 ms when repeated; 2-core AMD EPYC VM, other work running).
"""

import hashlib
import os
import warnings

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
STAMP_NAME = "fastrnn-numba-sources.stamp"
CACHE_SUFFIXES = (".nbi", ".nbc")
# Modules outside this package whose values the kernels freeze at compile time (Numba bakes
# globals in): the size rules marked `compiled` in kernels/tuning.py, and kernels/cpu.py that
# picks them. Their sources, not their values: the stamp must not differ between machines that
# share a cache directory (Numba keys each entry by CPU model already).
SHARED_SOURCES = ("cpu.py", "tuning.py")
# Modules of this package that no compiled code depends on: none of the others imports them
# (tests/test_packaging.py checks; __init__ has no compiled code) and numba checks their own
# functions itself. Left out, an edit to the launcher's strategy rules costs no recompilation.
LEAVES = ("__init__.py", "buffers.py", "cache_guard.py", "launch.py", "plan.py", "pool.py",
          "runners.py", "stepper.py", "weight_gradients.py")


def sources(package_dir=PACKAGE_DIR):
    """The files the compiled kernels depend on: every *.py in ``package_dir`` but LEAVES, then
    those of SHARED_SOURCES that exist."""
    paths = sorted(entry.path for entry in os.scandir(package_dir)
                   if entry.name.endswith(".py") and entry.name not in LEAVES
                   and entry.is_file())
    shared = (os.path.join(package_dir, os.pardir, name) for name in SHARED_SOURCES)
    return paths + [path for path in shared if os.path.isfile(path)]


def fingerprint(package_dir=PACKAGE_DIR):
    """Hex digest of sources() (names and contents) and of the numba and numpy versions."""
    import numba
    import numpy

    digest = hashlib.sha256()
    digest.update(f"numba {numba.__version__}\nnumpy {numpy.__version__}\n".encode())
    for path in sources(package_dir):
        with open(path, "rb") as f:
            source = f.read()
        digest.update(f"{os.path.basename(path)} {len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()


def _cache_subpath(package_dir):
    """The directory name numba gives this package's functions inside NUMBA_CACHE_DIR and the
    user-wide cache: numba_<sha1 of the package's path>."""
    try:
        from numba.core.caching import _CacheLocator
        return _CacheLocator.get_suitable_cache_subpath(os.path.join(package_dir, "__init__.py"))
    except (ImportError, AttributeError):  # numba moved it: the same formula, as of 0.68
        path = os.path.abspath(package_dir)
        return "_".join([os.path.basename(path), hashlib.sha1(path.encode()).hexdigest()])


def cache_dirs(package_dir=PACKAGE_DIR):
    """Every directory numba may cache this package's functions in, in numba's order of
    preference (existing or not; NUMBA_CACHE_DIR's is made, see below)."""
    from numba.core import config

    dirs = []
    subpath = _cache_subpath(package_dir)
    if config.CACHE_DIR:
        path = os.path.join(config.CACHE_DIR, subpath)
        # Numba makes it at the first cached function, after this check: made now, it takes its
        # stamp before its first entries (else the next import would clear those once).
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            pass
        dirs.append(path)
    dirs.append(os.path.join(package_dir, "__pycache__"))
    try:
        from numba.misc.appdirs import AppDirs
        dirs.append(os.path.join(AppDirs(appname="numba", appauthor=False).user_cache_dir,
                                 subpath))
    except (ImportError, AttributeError):
        pass
    return dirs


def _read_stamp(cache_dir):
    try:
        with open(os.path.join(cache_dir, STAMP_NAME)) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def refresh(cache_dir, stamp):
    """Make ``cache_dir``'s cache match ``stamp``: when its stamp differs (or is missing),
    remove its *.nbi/*.nbc files and write ``stamp``. True when it did. A missing directory is
    left alone (nothing cached there); OSErrors leave the rest as it is."""
    if not os.path.isdir(cache_dir) or _read_stamp(cache_dir) == stamp:
        return False
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return False
    for name in names:
        if name.endswith(CACHE_SUFFIXES):
            try:
                os.remove(os.path.join(cache_dir, name))
            except OSError:  # read-only, or another process removed it first
                pass
    # Written whole then renamed, so a concurrent reader sees the old stamp or the new one.
    tmp = os.path.join(cache_dir, f"{STAMP_NAME}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(stamp + "\n")
        os.replace(tmp, os.path.join(cache_dir, STAMP_NAME))
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
    return True


def guard(package_dir=PACKAGE_DIR, dirs=None):
    """Refresh every cache directory of ``package_dir`` (default: cache_dirs()) against the
    package's fingerprint. Returns the directories it cleared and restamped. Never raises."""
    try:
        stamp = fingerprint(package_dir)
        if dirs is None:
            dirs = cache_dirs(package_dir)
        return [d for d in dirs if refresh(d, stamp)]
    except OSError:
        return []
    except Exception as exc:  # never fail the import over a cache
        warnings.warn(f"fastrnn: numba cache check skipped ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=2)
        return []
