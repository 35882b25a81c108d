#!/usr/bin/env bash
# Validate a trained checkpoint before it may be deployed: the model-registry workflow's checks,
# runnable anywhere (tests/delivery/test_validate_model.py runs it on a tiny model).
#   1. export to ONNX with the validation checklist (outputs of ONNX Runtime = PyTorch's);
#   2. score it on the data's validation split and, given the current model, gate on accuracy
#      (deploy/accuracy_gate.py: at most MAX_DROP mIoU below the current one);
#   3. serve it and run schemathesis with every check against the live OpenAPI schema.
# usage: deploy/validate-model.sh CKPT DATA_ROOT OUT_DIR [CURRENT_MODEL]
# env:   MAX_DROP (0.01), PORT (8765), SCHEMATHESIS_EXAMPLES (25)
set -euo pipefail
(($# >= 3)) || { sed -n '2,10p' "$0" >&2; exit 2; }
ckpt=$1 data=$2 out=$3 current=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
mkdir -p "$out"

echo "== export with the ONNX checklist"
cmi export onnx "$ckpt" --out "$out/model.onnx" --data "$data"

echo "== accuracy on the validation split"
# The gate decides, so it reads the validation split (carved from train), never test.
cmi evaluate "$out/model.onnx" --data "$data" --split val --json "$out/eval-new.json"
if [[ -n $current ]]; then
  cmi evaluate "$current" --data "$data" --split val --json "$out/eval-current.json"
  "$python" "$here/accuracy_gate.py" "$out/eval-new.json" "$out/eval-current.json" \
    --max-drop "${MAX_DROP:-0.01}" | tee "$out/accuracy-gate.txt"
fi

echo "== schemathesis, all checks, against a live cmi serve"
port=${PORT:-8765}
cmi serve "$out/model.onnx" --host 127.0.0.1 --port "$port" --log-dir "$out/predictions" \
  --no-access-log >"$out/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$out/serve.log" >&2; exit 1; }
  sleep 0.5
done
# deploy/schemathesis.toml: which answers a schema-valid upload that is no photo may get.
"$python" -m schemathesis.cli --config-file "$here/schemathesis.toml" \
  run "http://127.0.0.1:$port/openapi.json" --checks all \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 20240601 --workers 1 --no-color
echo "== $ckpt is fit to deploy ($out/model.onnx)"
