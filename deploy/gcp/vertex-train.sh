#!/usr/bin/env bash
# Entry point of the train image on a Vertex AI custom job (deploy/gcp/vertex-train-job.yaml):
# clone the project, pull its data from the DVC remote (GCS), train with the given config and
# overrides, and copy the run folder (checkpoints with lineage, metrics, model card) to the job's
# model directory. W&B receives the run too when logger=wandb and an API key is available.
#
# Environment (all but CMI_PROJECT_GIT optional):
#   CMI_PROJECT_GIT        git URL of the cmi project (a `cmi init` repository with data/*.dvc)
#   CMI_PROJECT_REF        branch or tag to train from (default: main)
#   CMI_TRAIN_CONFIG       a YAML file in the project passed as `cmi train --config`
#   CMI_RUN_NAME           run folder name (default: the Vertex job id, else a timestamp)
#   WANDB_API_KEY_SECRET   Secret Manager version holding the W&B key,
#                          projects/P/secrets/wandb-api-key/versions/latest
#   AIP_MODEL_DIR          set by Vertex AI from baseOutputDirectory (gs://bucket/prefix/model/)
#   CLUSTER_SPEC           set by Vertex AI with several replicas: the node rank comes from it
# Arguments are more `cmi train` overrides, e.g. trainer=gpu trainer.devices=4 data=foodseg103.
set -euo pipefail

log() { printf '[cmi-vertex-train] %s\n' "$*" >&2; }
: "${CMI_PROJECT_GIT:?set CMI_PROJECT_GIT to the project repository URL}"
project=${CMI_PROJECT_DIR:-/workspace/project}
run_name=${CMI_RUN_NAME:-vertex-${CLOUD_ML_JOB_ID:-$(date +%Y%m%d-%H%M%S)}}

# The W&B key is read from Secret Manager with the job's service account (metadata server token),
# so it never appears in the job spec.
if [[ -n ${WANDB_API_KEY_SECRET:-} && -z ${WANDB_API_KEY:-} ]]; then
  WANDB_API_KEY=$(python - <<'PY'
import base64, json, os, urllib.request

def get(url, headers):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return json.load(r)

token = get(
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
    {"Metadata-Flavor": "Google"},
)["access_token"]
name = os.environ["WANDB_API_KEY_SECRET"]
secret = get(
    f"https://secretmanager.googleapis.com/v1/{name}:access",
    {"Authorization": f"Bearer {token}"},
)
print(base64.b64decode(secret["payload"]["data"]).decode().strip())
PY
)
  export WANDB_API_KEY
fi

# Several replicas: Lightning's DDP needs MASTER_ADDR/MASTER_PORT of node 0 and this node's rank.
# Vertex AI describes the cluster in CLUSTER_SPEC; workerpool0 holds the one primary replica.
nodes=1
if [[ -n ${CLUSTER_SPEC:-} ]]; then
  eval "$(python - <<'PY'
import json, os, shlex

spec = json.loads(os.environ["CLUSTER_SPEC"])
cluster, task = spec["cluster"], spec["task"]
hosts = cluster["workerpool0"] + cluster.get("workerpool1", [])
rank = task["index"] if task["type"] == "workerpool0" else 1 + task["index"]
addr, _, port = cluster["workerpool0"][0].rpartition(":")
for key, value in {"MASTER_ADDR": addr, "MASTER_PORT": port or "2222", "NODE_RANK": rank}.items():
    print(f"export {key}={shlex.quote(str(value))}")
print(f"nodes={len(hosts)}")
PY
)"
  # torchrun-style RANK/WORLD_SIZE count nodes here, not processes; Lightning sets its own.
  unset RANK WORLD_SIZE
  log "node ${NODE_RANK} of ${nodes}, primary ${MASTER_ADDR}:${MASTER_PORT}"
fi

log "cloning ${CMI_PROJECT_GIT} (${CMI_PROJECT_REF:-main})"
git clone --quiet --depth 1 --branch "${CMI_PROJECT_REF:-main}" "$CMI_PROJECT_GIT" "$project"
cd "$project"
cmi data pull
cmi data validate
config_args=()
[[ -n ${CMI_TRAIN_CONFIG:-} ]] && config_args=(--config "$CMI_TRAIN_CONFIG")
cmi train "${config_args[@]}" "run.name=${run_name}" "trainer.num_nodes=${nodes}" "$@"

# Only node 0 holds the complete run folder. Vertex AI mounts buckets at /gcs/BUCKET (Cloud
# Storage FUSE), so a copy there is an upload.
if [[ ${NODE_RANK:-0} == 0 && -n ${AIP_MODEL_DIR:-} ]]; then
  dest=/gcs/${AIP_MODEL_DIR#gs://}
  mkdir -p "$dest"
  cp -r "runs/${run_name}/." "$dest"
  log "run folder copied to ${AIP_MODEL_DIR}"
fi
