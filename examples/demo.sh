#!/usr/bin/env bash
# The main job, end to end on the real stack (run through `make demo`, which starts the stack,
# builds the job images and installs nps first):
#   1. a dataset round-trips through MinIO, byte-identical and checksum-verified;
#   2. a scanner stand-in writes a DICOM series, stored as a dataset;
#   3. a worker pool converts it to NIfTI with dcm2niix, then measures it (image statistics
#      into metadata.json) with a script that is itself a dataset;
#   4. the indexer makes the result searchable, with provenance back to the DICOM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
m() { nps --store minio "$@"; }

step "1. round trip through MinIO"
mkdir -p "$work/sub-01/anat"
head -c $((32 * 1024 * 1024)) /dev/urandom > "$work/sub-01/anat/sub-01_T1w.raw"
printf '{"Subject": "01"}\n' > "$work/sub-01/participant.json"
id=$(m put "$work/sub-01")
[ "$(m put "$work/sub-01")" = "$id" ] || { echo "content addressing broken" >&2; exit 1; }
m get "$id" "$work/copy"
diff -r --exclude=.nps "$work/sub-01" "$work/copy" && echo "dataset $id: identical after the round trip"

step "2. a DICOM series from a (synthetic) scanner"
uid=$(python3 "$here/synthetic_series.py" "$work/series")
echo "SeriesInstanceUID $uid -> imported series will be dataset $(nps hash series "$uid")"
dicom=$(m put "$work/series")
code=$(m put "$here/jobs")
echo "DICOM dataset $dicom, code dataset $code"

step "3. workers: 2 job slots and an indexer"
nps worker jobs --concurrency 2 > "$work/worker.log" 2>&1 & pids+=($!)
nps worker index > "$work/indexer.log" 2>&1 & pids+=($!)

step "convert to NIfTI with dcm2niix (neuro image)"
nifti=$(nps submit -d "$dicom:/input" --memory 1G --walltime 10m localhost/nps/neuro:1 \
        dcm2niix -z y -f t1w -o /output /input)
echo "job $nifti submitted"
m wait "$nifti" --timeout 300
m ls "$nifti"

step "measure it: image statistics into metadata.json"
stats=$(nps submit -d "$nifti:/input" -d "$code:/code" --memory 1G localhost/nps/neuro:1 \
        python3 /code/image_stats.py /input /output)
m wait "$stats" --timeout 300
m cat "$stats" stats.json

step "submitting the same conversion again runs nothing: the result exists"
again=$(nps submit -d "$dicom:/input" --memory 1G --walltime 10m localhost/nps/neuro:1 \
        dcm2niix -z y -f t1w -o /output /input)
[ "$again" = "$nifti" ] && m status "$again" | tail -n 1

step "4. searchable, with provenance"
for _ in $(seq 1 60); do
    found=$(nps search "inputs:$nifti AND metadata.brain_mean:>500" --json)
    [ "$found" != "[]" ] && break
    sleep 1
done
echo "$found" | python3 -c 'import json, sys; h = json.load(sys.stdin)[0]; print("found", h["id"], "brain_mean", h["metadata"]["brain_mean"], "from", h["inputs"])'
m show "$stats" | python3 -c 'import json, sys; r = json.load(sys.stdin); print("provenance:", r["id"], "<-", [i["dataset"] for i in r["inputs"]])'

step "stack"
nps infra status
echo
echo "demo OK"
