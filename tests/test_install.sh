#!/usr/bin/env bash
# The installed package (ctest Install.package; src/package/CMakeLists.txt registers it):
# installs this build into a fresh prefix, builds examples/ as a project of its own against it
# with find_package(mue), and a program with pkg-config, and runs them on the installed model's
# example scene; then moves the prefix and runs the installed CLI (and the Python module, where
# built) from it, which must find the model under the new prefix, not in the source tree.
#
#   test_install.sh SOURCE_DIR BUILD_DIR MODEL_NAME CMAKE CXX [PYTHON PYTHON_INSTALL_DIR]
set -euo pipefail
src="$1" build="$2" model_name="$3" cmake="$4" cxx="$5" python="${6:-}" python_dir="${7:-}"

work="$(mktemp -d "$build/install-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fail() { echo "test_install: $*" >&2; exit 1; }
# Nothing from the environment may point at a model or a package.
unset MUE_MODEL PYTHONPATH CMAKE_PREFIX_PATH PKG_CONFIG_PATH
export OMP_NUM_THREADS=1

# Staged under DESTDIR, so that nothing lands outside $work even where a path is absolute (the
# Python package's, when MUE_PYTHON_INSTALL_DIR is).
prefix="$work/root/opt/mue"
DESTDIR="$work/root" "$cmake" --install "$build" --prefix /opt/mue >"$work/install.log" || {
  cat "$work/install.log" >&2; fail "cmake --install failed"; }

# What the prefix holds.
models="$prefix/share/mue/models/$model_name"
for f in include/mue/mue.h include/mue/exit_policy.h bin/mue bin/mue-bench bin/mue-calibrate \
         share/mue/models/$model_name/config.json share/mue/models/$model_name/model.safetensors \
         share/mue/models/$model_name/example.png; do
  [ -e "$prefix/$f" ] || fail "the prefix lacks $f"
done
libdir="$(dirname "$(find "$prefix" -name 'libmue.so' | head -n 1)")"
[ -f "$libdir/libmue.so" ] || fail "the prefix lacks libmue.so"
[ -f "$libdir/cmake/mue/mueConfig.cmake" ] || fail "the prefix lacks the CMake package"
[ -f "$libdir/pkgconfig/mue.pc" ] || fail "the prefix lacks lib/pkgconfig/mue.pc"
logs=("$models"/*.log)
[ ! -e "${logs[0]}" ] || fail "training logs were installed: ${logs[*]}"

# examples/ as a project of its own: find_package(mue) against the prefix.
"$cmake" -S "$src/examples" -B "$work/examples" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" >"$work/examples.log" 2>&1 || {
  cat "$work/examples.log" >&2; fail "configuring examples/ against the prefix failed"; }
"$cmake" --build "$work/examples" -j 2 >>"$work/examples.log" 2>&1 || {
  cat "$work/examples.log" >&2; fail "building examples/ against the prefix failed"; }
scene="$work/scene.png"
cp "$models/example.png" "$scene"
(cd "$work" && "$work/examples/caption_and_entail" "$models" "$scene") >"$work/example.out" 2>&1 ||
  { cat "$work/example.out" >&2; fail "the example built against the prefix failed"; }
for want in "caption: " "image reused yes" "at full depth: "; do
  grep -q "$want" "$work/example.out" || { cat "$work/example.out" >&2; fail "no \"$want\""; }
done
# (Output captured first: grep -q ends the pipe early, and pipefail would count ldd's SIGPIPE.)
libs="$(ldd "$work/examples/caption_and_entail")"
grep -q "$libdir/libmue.so" <<<"$libs" || fail "the example does not load the prefix's libmue.so"

# pkg-config: a program compiled and linked with mue.pc's flags alone.
cat >"$work/policy.cpp" <<'EOF'
#include <iostream>
#include "mue/exit_policy.h"
int main() { std::cout << mue::ExitPolicy::load(PATH).to_json().dump() << "\n"; }
EOF
flags="$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs mue)" ||
  fail "pkg-config --cflags --libs mue failed"
# shellcheck disable=SC2086
"$cxx" -std=c++17 "$work/policy.cpp" -o "$work/policy" \
  -DPATH="\"$models/exit_policy.caption.json\"" $flags || fail "building with pkg-config failed"
policy="$(LD_LIBRARY_PATH="$libdir" "$work/policy")" || fail "the pkg-config program failed"
grep -q '"exit_threshold_text"' <<<"$policy" ||
  fail "the pkg-config program did not read the installed policy: $policy"

# The Python module from the prefix: the default model is the prefix's.
check_python() {
  local site="$1" models="$2"
  [ -f "$site/mue/__init__.py" ] || fail "the prefix lacks the Python package in $site/mue"
  (cd / && PYTHONPATH="$site" "$python" -c "
import mue
assert mue.__file__.startswith('$site/'), mue.__file__
assert mue.default_model_dir() == '$models', mue.default_model_dir()
engine = mue.Engine.load()
assert engine.model_dir == '$models', engine.model_dir
print(engine.caption('$scene'))
") >"$work/python.out" 2>&1 ||
    { cat "$work/python.out" >&2; fail "the installed Python module failed"; }
}
# An absolute package directory stays behind when the prefix moves: checked before the move.
case "$python_dir" in /*) [ -z "$python" ] || check_python "$work/root$python_dir" "$models" ;; esac

# Move the prefix: the installed binaries find the model beside themselves, wherever that is.
moved="$work/moved"
mv "$prefix" "$moved"
models="$moved/share/mue/models/$model_name"
(cd / && "$moved/bin/mue" info) >"$work/info.json" 2>&1 ||
  { cat "$work/info.json" >&2; fail "mue info failed"; }
grep -q "\"model\": \"$models\"" "$work/info.json" ||
  { cat "$work/info.json" >&2; fail "the installed mue does not use $models"; }
# At full depth, as the Python module's Engine.load() runs by default (the CLI's default is the
# model's calibrated policy).
echo '{}' >"$work/full_depth.json"
(cd / && "$moved/bin/mue" caption "$scene" --json --policy "$work/full_depth.json") \
  >"$work/caption.json" 2>&1 ||
  { cat "$work/caption.json" >&2; fail "the installed mue caption failed"; }
grep -q '"caption": "' "$work/caption.json" || { cat "$work/caption.json" >&2; fail "no caption"; }
"$moved/bin/mue-bench" --help >/dev/null || fail "the installed mue-bench does not run"
# A missing installed model is an error that names where the model was looked for.
mv "$models" "$models.away"
if (cd / && "$moved/bin/mue" info) >"$work/missing.txt" 2>&1; then
  fail "mue ran without a model"
fi
grep -q "model directory $models (from the installed default model) does not exist" \
  "$work/missing.txt" || { cat "$work/missing.txt" >&2; fail "unclear missing-model error"; }
mv "$models.away" "$models"

if [ -n "$python" ]; then
  case "$python_dir" in /*) ;; *) check_python "$moved/$python_dir" "$models" ;; esac
  caption="$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['caption'])" \
             "$work/caption.json")"
  grep -qF "caption='$caption'" "$work/python.out" ||
    { cat "$work/python.out" >&2; fail "the Python module's caption is not the CLI's: $caption"; }
fi
echo "test_install: ok ($(grep '^caption: ' "$work/example.out"))"
