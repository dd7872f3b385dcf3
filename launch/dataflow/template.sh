#!/usr/bin/env bash
# Build and run the engagement pipeline as a Dataflow Flex Template (needs docker and gcloud, logged in).
#
#   launch/dataflow/template.sh build        # image (docker build + push) and template spec (gs://...json)
#   launch/dataflow/template.sh run          # launch a streaming job from the spec
#   launch/dataflow/template.sh metadata     # regenerate metadata.json from the options class
#
# Variables (build): PROJECT, REGION, BUCKET (gs://... for the spec and temp files), IMAGE (your Artifact
#   Registry repository/name:tag), TEMPLATE_LAUNCHER_IMAGE (Google's python311-template-launcher-base image, pinned
#   to the tag or digest you tested).
# Variables (run): PROJECT, REGION, BUCKET, IMAGE, KAFKA_BOOTSTRAP_SERVERS, PG_DSN, REDIS_URL; optional
#   SERVICE_ACCOUNT, NETWORK, SUBNETWORK, MAX_WORKERS (default 4), JOB_NAME, EXTRA_PARAMETERS (more
#   name=value pairs separated by '~', e.g. "api_url=https://crm.example/api~bq_project=my-project").
#   PYTHON: the project's interpreter (default .venv/bin/python).
# Secrets (KAFKA_SASL_PASSWORD, ENGAGEMENT_API_CLIENT_SECRET) are not passed by this script: give them to the
# workers from Secret Manager, never as plain template parameters in a shared shell history.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python=python3

need() {
  local name
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      echo "error: set $name (see the header of $0 and docs/runners.md, section Dataflow)" >&2
      exit 2
    fi
  done
}

spec() { echo "${BUCKET%/}/templates/engagement.json"; }

build() {
  need PROJECT REGION BUCKET IMAGE TEMPLATE_LAUNCHER_IMAGE
  (cd "$repo" && "$python" -m launch.dataflow.metadata --check)
  docker build -f "$here/Dockerfile" --build-arg "TEMPLATE_LAUNCHER_IMAGE=$TEMPLATE_LAUNCHER_IMAGE" -t "$IMAGE" "$repo"
  docker push "$IMAGE"
  gcloud dataflow flex-template build "$(spec)" --project "$PROJECT" --image "$IMAGE" --sdk-language PYTHON \
    --metadata-file "$here/metadata.json"
}

run() {
  need PROJECT REGION BUCKET IMAGE KAFKA_BOOTSTRAP_SERVERS PG_DSN REDIS_URL
  # '^~^' makes '~' the separator: values such as a libpq DSN contain spaces and may contain commas.
  local params="^~^kafka_bootstrap_servers=${KAFKA_BOOTSTRAP_SERVERS}~pg_dsn=${PG_DSN}~redis_url=${REDIS_URL}"
  params+="~sdk_container_image=${IMAGE}~temp_location=${BUCKET%/}/tmp"
  if [[ -n "${EXTRA_PARAMETERS:-}" ]]; then
    params+="~${EXTRA_PARAMETERS}"
  fi
  local args=(--project "$PROJECT" --region "$REGION" --template-file-gcs-location "$(spec)"
              --enable-streaming-engine --max-workers "${MAX_WORKERS:-4}" --parameters "$params")
  [[ -n "${SERVICE_ACCOUNT:-}" ]] && args+=(--service-account-email "$SERVICE_ACCOUNT")
  [[ -n "${NETWORK:-}" ]] && args+=(--network "$NETWORK")
  [[ -n "${SUBNETWORK:-}" ]] && args+=(--subnetwork "$SUBNETWORK")
  gcloud dataflow flex-template run "${JOB_NAME:-engagement-$(date -u +%Y%m%d-%H%M%S)}" "${args[@]}"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  metadata) cd "$repo" && "$python" -m launch.dataflow.metadata --write ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
