#!/usr/bin/env bash
# The main job, end to end on the real stack (run through `make demo`, which starts the stack,
# builds the job images and installs nps first):
#   1. a dataset round-trips through MinIO, byte-identical and checksum-verified;
#   2. a scanner stand-in (dcmtk's storescu) sends a DICOM series to the lab's PACS (Orthanc),
#      which routes it to the NPS receiver; the assembler commits it as a series dataset and the
#      indexer makes it searchable by its DICOM fields;
#   3. a worker pool converts it to NIfTI with dcm2niix, then measures it (image statistics
#      into metadata.json) with a script that is itself a dataset;
#   4. the result is searchable, with provenance back to the DICOM series;
#   5. a researcher works through the REST API (behind the stack's nginx) with nothing but a URL
#      and a token: find, freeze a group, note a QC verdict, map a script over the group, follow
#      it, export the numbers beside each series' fields, walk the provenance, download a file.
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
# The Python that runs nps (it has pydicom and numpy), found beside the `nps` on PATH: only that
# command is on PATH, so dcmtk's storescu and echoscu are the ones below, not pynetdicom's.
python=$(dirname "$(readlink -f "$(command -v nps)")")/python
storescu --version 2>&1 | grep dcmtk >/dev/null || {
    echo "storescu on PATH ($(command -v storescu)) is not dcmtk's: put \$NPS_CACHE/cli (only nps) on PATH," \
        "not the virtualenv's bin (see README.md)" >&2; exit 1; }

step "1. round trip through MinIO"
mkdir -p "$work/sub-01/anat"
head -c $((32 * 1024 * 1024)) /dev/urandom > "$work/sub-01/anat/sub-01_T1w.raw"
printf '{"Subject": "01"}\n' > "$work/sub-01/participant.json"
id=$(m put "$work/sub-01")
[ "$(m put "$work/sub-01")" = "$id" ] || { echo "content addressing broken" >&2; exit 1; }
m get "$id" "$work/copy"
diff -r --exclude=.nps "$work/sub-01" "$work/copy" && echo "dataset $id: identical after the round trip"

step "2. a scanner sends a DICOM series to the PACS (Orthanc), which routes it to NPS"
stack_value() { sed -n "s/^$1=//p" "$(infra_env)"; }
infra_env() { "$here/../infra/stack.sh" env; }
export NPS_SERIES_STABLE_SECONDS=5  # a series is committed 5 s after its last instance (default 60)
nps receiver --processes 1 > "$work/receiver.log" 2>&1 & pids+=($!)
nps worker assemble > "$work/assembler.log" 2>&1 & pids+=($!)
nps worker index > "$work/indexer.log" 2>&1 & pids+=($!)
port=$(stack_value NPS_DICOM_PORT)
for _ in $(seq 1 60); do TCP_NODELAY=1 echoscu -aec NPS 127.0.0.1 "$port" 2>/dev/null && break; sleep 0.5; done
uid=$("$python" "$here/synthetic_series.py" "$work/series")
dicom=$(nps hash series "$uid")
echo "SeriesInstanceUID $uid -> series dataset $dicom"
TCP_NODELAY=1 storescu -aet SCANNER -aec "$(stack_value NPS_ORTHANC_AET)" +sd 127.0.0.1 \
    "$(stack_value NPS_ORTHANC_DICOM_PORT)" "$work/series"
echo "sent 24 instances to Orthanc; waiting for NPS to commit and index the series"
for _ in $(seq 1 120); do
    count=$(nps find "id:$dicom" -f csv --fields number_of_instances 2>/dev/null | tail -n +2)
    [ "$count" = "24" ] && break
    sleep 1
done
[ "$count" = "24" ] || { echo "the series did not arrive; see $work/*.log" >&2; tail -n 5 "$work"/*.log >&2; exit 1; }
nps find 'modality:MR AND series_description:*t1w*' --fields id,patient_id,series_description,classification,number_of_instances
code=$(m put "$here/jobs")
echo "code dataset $code"

step "3. workers: 2 job slots"
nps worker jobs --concurrency 2 > "$work/worker.log" 2>&1 & pids+=($!)

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
for id in "$stats" "$nifti"; do
    m show "$id" | python3 -c 'import json, sys; r = json.load(sys.stdin); print("provenance:", r["id"], "<-", [i["dataset"] + "@r" + str(i["revision"]) for i in r["inputs"]])'
done
nps find "id:$dicom" --fields id,kind,series_description,classification

step "5. the researcher's API: nothing but a URL and a token"
api_port=$(stack_value NPS_API_PORT)
if (exec 3<>"/dev/tcp/127.0.0.1/$api_port") 2>/dev/null; then
    echo "port $api_port (NPS_API_PORT) is in use: stop what listens there, or set NPS_API_PORT for the stack" >&2
    exit 1
fi
nps admin user add demo --role member --project default
token=$(nps admin token create demo --days 1)
nps api serve > "$work/api.log" 2>&1 & pids+=($!)
nps worker analyses > "$work/analyst.log" 2>&1 & pids+=($!)   # plans analyses the API records
web=$(stack_value NPS_WEB_URL)
for _ in $(seq 1 60); do curl -fsS "$web/api/v1/health" > /dev/null 2>&1 && break; sleep 0.5; done
export NPS_API_URL=$web NPS_API_TOKEN=$token   # from here on, nps talks to the API
nps whoami
nps find 'kind:series' --fields id,patient_id,series_description,classification,number_of_instances
group=$(nps group create "T1w series" --query 'kind:series AND classification:T1w')
nps meta add "$dicom" qc=pass --note "looked fine"
analysis=$(nps analysis map --group "$group" --query 'user.qc:pass' --image localhost/nps/busybox:1 -- \
    sh -c 'mkdir -p /output/.nps && echo "{\"instances\": $(ls /input/dicom | wc -l)}" > /output/.nps/metadata.json')
nps analysis status "$analysis" --wait
nps export --analysis "$analysis" --fields metadata.instances --input-fields patient_id,series_description
nps provenance "$dicom" --descendants --depth 3
nps get "$stats" "$work/stats-copy" && echo "downloaded $(ls "$work/stats-copy" | wc -l) file(s) of $stats, checksums verified"
unset NPS_API_URL NPS_API_TOKEN

step "stack"
nps infra status
echo
echo "demo OK"
