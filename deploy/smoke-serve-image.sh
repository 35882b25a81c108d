#!/usr/bin/env bash
# Smoke-test a built serve image: run it with a model mounted, send photos to /v1/segment, then
# ask /v1/drift for a report (drift monitoring runs inside the image). The model-registry
# workflow runs it with docker; here `CONTAINER=podman` runs it on an image container-check built.
# usage: deploy/smoke-serve-image.sh IMAGE MODEL_DIR PHOTO... (MODEL_DIR holds model.onnx and
#        its reference CSV; three or more photos)
# env:   CONTAINER (docker), PORT (8000), REQUESTS (12)
set -euo pipefail
(($# >= 3)) || { sed -n '2,8p' "$0" >&2; exit 2; }
image=$1 models=$(cd "$2" && pwd)
shift 2
photos=("$@")
cli=${CONTAINER:-docker} port=${PORT:-8000} requests=${REQUESTS:-12}
name=cmi-smoke-$$
# The drift window and minimum are lowered so a dozen requests make a report.
"$cli" run -d --name "$name" --network host -v "$models:/models:ro" \
  -e CMI_PORT="$port" -e CMI_DRIFT_WINDOW="$requests" -e CMI_DRIFT_MIN_SAMPLES=3 \
  -e CMI_LOG_DIR=/tmp/predictions "$image" >/dev/null
trap '"$cli" rm -f "$name" >/dev/null 2>&1 || true' EXIT
url=http://127.0.0.1:$port
for _ in $(seq 120); do
  curl -fsS "$url/readyz" >/dev/null 2>&1 && break
  [[ $("$cli" inspect --format '{{.State.Running}}' "$name") == true ]] || {
    "$cli" logs "$name" >&2; exit 1; }
  sleep 1
done
curl -fsS "$url/readyz" >/dev/null || { echo "smoke: no /readyz answer" >&2; "$cli" logs "$name" >&2; exit 1; }
for ((i = 0; i < requests; i++)); do
  photo=${photos[i % ${#photos[@]}]}
  curl -fsS -F "file=@$photo" "$url/v1/segment" >/dev/null
done
echo "smoke: $requests photos segmented"
drift=$(curl -sS -w '\n%{http_code}' "$url/v1/drift")
code=${drift##*$'\n'} body=${drift%$'\n'*}
echo "smoke: GET /v1/drift -> $code $body" | cut -c1-400
[[ $code == 200 ]] || { "$cli" logs "$name" >&2; exit 1; }
grep -q '"drift' <<<"$body" || { echo "smoke: /v1/drift answered no drift report" >&2; exit 1; }
echo "smoke: the image serves and reports drift"
