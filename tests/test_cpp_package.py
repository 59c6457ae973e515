"""The installed C++ front end, used the way a simulator author outside this repository uses it:
a tiny simulator built against the installed package with CMake (`find_package(probexec)`) and
with plain g++ and pkg-config, then run standalone and driven by the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import probexec
from conftest import PREFIX, build_tool, build_with_pkg_config, run_checked

MAIN_CPP = r"""
#include <probexec/probexec.hpp>

using namespace probexec;

static Tensor model() {
  double mu = sample(Normal(0.0, 1.0), "mu");
  observe(Normal(mu, 1.0), "y");
  return mu;
}

int main(int argc, char** argv) { return serve(model, argc, argv, "out_of_tree"); }
"""

CMAKE_LISTS = """
cmake_minimum_required(VERSION 3.20)
project(out_of_tree_sim LANGUAGES CXX)
find_package(probexec REQUIRED)
add_executable(sim main.cpp)
target_link_libraries(sim PRIVATE probexec::probexec)
"""


def _build_with_cmake(src: Path) -> Path:
    cmake = build_tool("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    if build_tool("pkg-config") is None:
        pytest.skip("pkg-config is not installed (probexecConfig.cmake finds libzmq through it)")
    build = src / "build"
    cmd = [cmake, "-S", str(src), "-B", str(build), f"-DCMAKE_PREFIX_PATH={PREFIX}"]
    cmd.append("-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    ninja = build_tool("ninja")
    if ninja is not None:
        cmd += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    run_checked(cmd, src)
    run_checked([cmake, "--build", str(build)], src, timeout=120)
    exe = build / "sim"
    assert exe.is_file()
    return exe


@pytest.mark.parametrize("how", ["cmake", "pkg-config"])
def test_out_of_tree_simulator(tmp_path: Path, how: str) -> None:
    (tmp_path / "main.cpp").write_text(MAIN_CPP)
    (tmp_path / "CMakeLists.txt").write_text(CMAKE_LISTS)
    exe = _build_with_cmake(tmp_path) if how == "cmake" else build_with_pkg_config(tmp_path)

    # Standalone: the instrumented program still runs as a plain simulator.
    out = run_checked([str(exe), "--standalone", "--seed", "3", "--traces", "5"], tmp_path, timeout=30)
    lines = [line for line in out.splitlines() if line.startswith("trace ")]
    assert len(lines) == 5, out
    for k, line in enumerate(lines):
        assert line.startswith(f"trace {k}: 2 draws, result "), line
        assert np.isfinite(float(line.split("result")[1]))
    # Same seed, same output.
    assert (
        run_checked([str(exe), "--standalone", "--seed", "3", "--traces", "5"], tmp_path, timeout=30) == out
    )

    # Driven by the engine, draw by draw.
    model = probexec.RemoteModel(executable=exe, timeout=20)
    try:
        assert model.peer_version == 2
        assert model.model_name == "out_of_tree"
        batch = model.prior(200, mode="per_draw", seed=0)
        assert batch.num_traces == 200
        mu = batch.values_of("mu")
        assert mu.shape == (200,)
        assert np.isfinite(mu).all()
        assert 0.3 < mu.std() < 2.0  # from N(0, 1), not a constant
        assert np.isfinite(batch.values_of("y")).all()
    finally:
        model.close()


# A simulator whose draws sit two calls deep, with `PADDING` compiled in before them: padding
# that changes size moves every later function in the binary, as any unrelated edit does.
STABLE_CPP = r"""
#include <probexec/probexec.hpp>

using namespace probexec;

PADDING

__attribute__((noinline)) static double inner(double mu) {
  observe(Normal(mu, 1.0), "y");
  return sample(Uniform(0.0, 1.0)).item();  // unnamed: its id is its call stack alone
}

__attribute__((noinline)) static Tensor model() {
  double mu = sample(Normal(0.0, 1.0), "mu");
  tag(Tensor(inner(mu)), "u");
  return mu;
}

int main(int argc, char** argv) { return serve(model, argc, argv, "stable_ids"); }
"""

PADDINGS = [
    "__attribute__((used)) static double padding() { return 0.0; }",
    # Volatile accumulations the optimiser cannot fold away: a few hundred bytes of code.
    "__attribute__((used, noinline)) static double padding() {\n  volatile double s = 0;\n"
    + "".join(f"  s = s * 1.{k} + {k};\n" for k in range(1, 60))
    + "  return s * 0.0;\n}",
]


def _address_ids(exe: Path) -> dict[str, int]:
    model = probexec.RemoteModel(executable=exe, timeout=20)
    try:
        batch = model.prior(3, mode="per_draw", seed=0)
    finally:
        model.close()
    ids = {}
    for aid in np.unique(batch.address_id):
        rec = batch.addresses[int(aid)]
        ids[rec.name or f"unnamed kind {rec.kind} type {rec.dist_type}"] = int(aid)
    return ids


def test_address_ids_survive_a_rebuild_with_other_code_moved(tmp_path: Path) -> None:
    """A network trained on traces of one build must recognise the addresses of the next build
    of the same model code: ids follow (function, offset in it), not offsets in the binary."""
    builds = []
    for k, padding in enumerate(PADDINGS):
        src = tmp_path / f"build{k}"
        src.mkdir()
        (src / "main.cpp").write_text(STABLE_CPP.replace("PADDING", padding))
        builds.append(build_with_pkg_config(src))
    sizes = [run_checked(["nm", "-C", str(b)], tmp_path) for b in builds]
    moved = [next(line.split()[0] for line in s.splitlines() if "model()" in line) for s in sizes]
    assert moved[0] != moved[1], "the padding did not move the model's code; the test proves nothing"
    first, second = (_address_ids(b) for b in builds)
    assert len(first) == 4, first  # mu, y, the unnamed uniform, u
    assert first == second
