#!/usr/bin/env bash
# Builds what tools/gpu-check.sh runs on the GPU machine, and packs it with
# every shared library it needs but the C and C++ runtimes (LLVM 19, Lua,
# cmocka: about 45 MB, xz-compressed) into one folder that travels with the
# working tree.  Run from anywhere in a checkout, on the build machine:
#
#     bash tools/gpu-bundle.sh [BUILD_DIR] [BUNDLE]   (build-gpu, gpu-bundle)
#
# The bundle is untracked: do not commit it.  docs/notes/gpu-run.md says how
# the GPU machine runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
out=${2:-gpu-bundle}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j2 --target jopt test_gpu bench_threads
rm -rf "$out"
mkdir -p "$out"
files=("$build/libjopt.so" "$build/test_gpu" "$build/bench_threads")
skip='^(linux-vdso|libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libpthread|libdl\.so|librt\.so|libcuda\.so)'
declare -A seen=()
for f in "${files[@]}"; do
  xz -T2 -6 -c "$f" > "$out/$(basename "$f").xz"
  while read -r name _ path _; do
    [[ "$name" =~ $skip ]] && continue
    [ -n "${path:-}" ] && [ -f "$path" ] || continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    xz -T2 -6 -c "$(readlink -f "$path")" > "$out/$name.xz"
  done < <(ldd "$f" | grep '=>')
done
cat > "$out/unpack.sh" <<'UNPACK'
#!/usr/bin/env bash
# Decompresses this folder's files into /tmp/jopt-libs (with Python's lzma:
# xz may be missing there).
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p /tmp/jopt-libs
for f in "$here"/*.xz; do
  python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" \
    "$f" "/tmp/jopt-libs/$(basename "$f" .xz)"
done
chmod +x /tmp/jopt-libs/*
UNPACK
chmod +x "$out/unpack.sh"
git rev-parse HEAD > "$out/COMMIT" 2>/dev/null || true
du -sh "$out"
