#!/usr/bin/env bash
# The main job at this stage: with the stack up, put a small study-like folder into MinIO,
# read it back, and show that what comes back is byte-identical and checksum-verified.
# Run through `make demo` (which starts the stack and installs nps first).
set -euo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/sub-01

echo "== building a sample subject folder in $src"
mkdir -p "$src/anat" "$src/dwi"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$src/anat/sub-01_T1w.nii"   # large enough for multipart
head -c $((8 * 1024 * 1024)) /dev/urandom > "$src/dwi/sub-01_dwi.nii"
printf '0 1000 1000 1000\n' > "$src/dwi/sub-01_dwi.bval"
printf '{"Subject": "01", "Modality": "MR"}\n' > "$src/participant.json"

echo "== nps --store minio put"
id=$(nps --store minio put "$src")
echo "dataset id: $id"

echo "== putting it again stores nothing new (same content, same id)"
again=$(nps --store minio put "$src")
[ "$again" = "$id" ] || { echo "content addressing broken: $again != $id" >&2; exit 1; }

echo "== nps --store minio ls $id"
nps --store minio ls "$id"

echo "== nps --store minio cat $id participant.json"
nps --store minio cat "$id" participant.json

echo "== nps --store minio get $id (every checksum verified)"
nps --store minio get "$id" "$work/copy"
diff -r --exclude=.nps "$src" "$work/copy" && echo "round trip through MinIO: identical"

echo "== the id of a DICOM series is sha1 of its SeriesInstanceUID"
nps hash series 1.2.840.113619.2.55.3.604688119.969.1268071029.320

echo "== stack status"
nps infra status
echo "demo OK"
