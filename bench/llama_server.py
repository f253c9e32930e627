"""A real llama.cpp `llama-server` (router mode) and models for it, with no download beyond the package index.

The llama-cpp-python source distribution vendors llama.cpp, router mode included
(`vendor/llama.cpp/tools/server`). This script is the one contract the tests, the
live replay and a user trying prewarm on llama.cpp share:

    python bench/llama_server.py build          # prints the binary's path as its last line
    python bench/llama_server.py models DIR N   # writes N GGUF models of different sizes into DIR

`build` compiles into a cache directory outside the checkout, keyed by the source
version and the build flags, so a fresh clone on the same machine reuses the
binary: the first build costs about 7-8 minutes on two cores, later ones nothing.
The binary is linked statically so that router mode, which starts each model as a
child of its own executable (/proc/self/exe), needs no library path.

`models` writes random-weight llama models (tests/llamacpp_model.py's writer) whose
sizes grow geometrically, so their load times are real and told apart: with
`--load-mode none` (no mmap, so the page cache cannot hide the load) they load in
0.09 s (smallest) to 0.41 s (largest) on this machine, each size apart from the next.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

VERSION = "0.3.36"
FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_SUBPROCESS=ON",
)
# Widths of the generated models: weights grow with width squared (77 MB to 470 MB at 8
# layers). From load request to "loaded" on this 2-core machine with --load-mode none,
# polled every 10 ms (bench/live_replay.py): 0.09, 0.13, 0.18, 0.23, 0.28, 0.41 s. A
# first, coarser timing (curl and a Python status check per poll, ~0.3 s each) gave
# 0.41-0.76 s for the three smallest and 3.4 s at 1536 wide, 7.9 s at 2048; the widths
# stop at 1280 from that timing.
WIDTHS = (512, 640, 768, 896, 1024, 1280)
LAYERS = 8


def cache_dir() -> Path:
    """Where the binary lives: $PREWARM_LLAMA_CACHE, else the user's cache, keyed by version and flags."""
    base = os.environ.get("PREWARM_LLAMA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "prewarm", "llama-server"
    )
    key = hashlib.sha256(" ".join((VERSION, *FLAGS)).encode()).hexdigest()[:12]
    return Path(base) / f"{VERSION}-{key}"


def binary() -> Path:
    return cache_dir() / "llama-server"


# The context every child runs with in the tests and the live replay: small models, small KV caches.
CTX = 256


def router_command(binary: Path, models_dir: Path, port: int, models_max: int = 0,
                   extra: tuple[str, ...] = ()) -> list[str]:
    """The router as the tests and the live replay run it: loopback, one thread per child, no mmap (a load
    reads the whole file, so the page cache cannot hide it)."""
    return [str(binary), "--models-dir", str(models_dir), "--models-max", str(models_max), "--host", "127.0.0.1",
            "--port", str(port), "-c", str(CTX), "-t", "1", "--load-mode", "none", *extra]


def build(jobs: int) -> Path:
    """Build llama-server unless the cache holds it; a lock keeps two builds from racing."""
    target = binary()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
            work = Path(tmp)
            print(f"downloading llama-cpp-python {VERSION} (source) ...", file=sys.stderr, flush=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", f"llama-cpp-python=={VERSION}",
                 "--no-binary", ":all:", "--no-deps", "-d", str(work)],
                check=True,
            )
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
            with tarfile.open(sdist) as tar:
                tar.extractall(work, filter="data")
            src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
            out = work / "build"
            print(f"building llama-server into {target.parent} (first build: minutes) ...", file=sys.stderr, flush=True)
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.run(["cmake", "-S", str(src), "-B", str(out), *generator, *FLAGS], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)], check=True,
                           stdout=subprocess.DEVNULL)
            built = out / "bin" / "llama-server"
            tmp_target = target.with_suffix(".part")
            shutil.copy2(built, tmp_target)
            os.replace(tmp_target, target)
    return target


def write_models(directory: Path, n: int) -> list[Path]:
    """N models named m0.gguf ... of growing width (cycling the widths with more layers past six)."""
    from llamacpp_model import write_tiny_llama

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        width = WIDTHS[i % len(WIDTHS)]
        layers = LAYERS * (1 + i // len(WIDTHS))
        path = directory / f"m{i}.gguf"
        if not path.exists():
            write_tiny_llama(path, seed=i, name=f"m{i}", n_embd=width, n_layer=layers)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build llama-server into the cache unless it is there; print its path")
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel compile jobs (default: all cores)")
    sub.add_parser("path", help="print where the binary is (or would be) cached")
    m = sub.add_parser("models", help="write N GGUF models of different sizes into DIR")
    m.add_argument("dir", type=Path)
    m.add_argument("n", type=int)
    args = parser.parse_args(argv)
    if args.command == "build":
        missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
        if missing and not binary().exists():
            raise SystemExit(f"cannot build llama-server: {' and '.join(missing)} not found (install a C++ "
                             "toolchain and CMake 3.14 or newer)")
        try:
            print(build(args.jobs))
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"building llama-server failed: {' '.join(map(str, exc.cmd[:4]))} ... exited with "
                             f"{exc.returncode} (its output is above)") from None
    elif args.command == "path":
        print(binary())
    else:
        if args.n < 1:
            parser.error("N must be at least 1")
        for path in write_models(args.dir, args.n):
            print(f"{path}\t{path.stat().st_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
