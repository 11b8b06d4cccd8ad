#!/usr/bin/env bash
# Pack what fedkd's GPU check needs beyond a CUDA machine's own PyTorch, for a GPU machine
# that cannot reach a package registry (the lent H200s: Python 3.12, torch 2.11+cu130, NumPy,
# scikit-learn already there; no network). Run HERE, on a machine whose pip reaches a registry,
# from the repository root:
#
#     bash benchmarks/gpu_bundle.sh          # writes .gpu_bundle/site.tar.xz (git-ignored)
#
# then on the GPU machine `bash benchmarks/gpu_check.sh` with `.gpu_bundle` carried along.
#
# What goes in: Flower's simulation extra (flwr, Ray and their dependencies) at the pins of
# constraints.txt, plus Hydra (the CLI smoke run), as CPython 3.12 manylinux x86-64 wheels
# unpacked into one folder. Left out: torch (never a CUDA wheel from here: the machine's own is
# used), NumPy and uvloop (the machine has them), uv (an installer, not needed to run), and
# Ray's Java jars, RLlib and source maps (Ray core is all Flower uses): the working tree that
# travels to the GPU machine is limited to 64 MiB, and Ray's wheel alone is 72 MB.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
OUTDIR=.gpu_bundle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
done
target=(--only-binary=:all: --python-version "$PYVER" --implementation cp "${platforms[@]}")
grep -v '^torch==' constraints.txt >"$work/constraints.txt"
pins() { grep -i "^$1==" constraints.txt; }

"$PY" -m pip download -q "${target[@]}" -c "$work/constraints.txt" -d "$work/wheels" \
    "flwr[simulation]"
"$PY" -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" \
    "$(pins hydra-core)" "$(pins omegaconf)"
# antlr4 4.9.3 (Hydra's pin) exists only as an sdist: build its pure-Python wheel here
"$PY" -m pip wheel -q --no-deps -w "$work/wheels" "$(pins antlr4-python3-runtime)"
rm -f "$work"/wheels/{numpy,uv,uvloop}-*.whl

"$PY" -m pip install -q --no-deps --no-compile --target "$work/site" "${target[@]}" \
    "$work"/wheels/*.whl
rm -rf "$work/site/bin" "$work/site/ray/jars" "$work/site/ray/rllib"
find "$work/site" -name '*.js.map' -delete
find "$work/site" -name __pycache__ -type d -prune -exec rm -rf {} +

mkdir -p "$OUTDIR"
tar -C "$work/site" -cf - . | xz -T0 -6 >"$OUTDIR/site.tar.xz.tmp"
mv "$OUTDIR/site.tar.xz.tmp" "$OUTDIR/site.tar.xz"
ls "$work/wheels" >"$OUTDIR/wheels.txt"
echo "$PYVER" >"$OUTDIR/python.txt"  # gpu_check.sh unpacks it only for this Python
size=$(stat -c %s "$OUTDIR/site.tar.xz")
echo "wrote $OUTDIR/site.tar.xz ($((size / 1048576)) MiB; $(wc -l <"$OUTDIR/wheels.txt") wheels, list in $OUTDIR/wheels.txt)"
if [ "$size" -gt $((56 * 1048576)) ]; then
    echo "warning: over 56 MiB; with the repository it may exceed the 64 MiB a device call carries" >&2
fi
