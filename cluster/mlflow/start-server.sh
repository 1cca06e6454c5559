#!/usr/bin/env bash
# Start the cluster's MLflow tracking server: PostgreSQL backend, artifacts proxied by the server
# (s3:// or an NFS folder), MLflow's basic-auth app with its own auth database.
#
# Every secret comes from the environment (a Kubernetes Secret, AWS Secrets Manager through the
# instance's env, or a test that generates them); nothing secret is read from or written to the
# repository. The auth app reads its database URI from an ini file only, so this script writes one
# into a private runtime folder (mode 0700, file 0600) and points MLFLOW_AUTH_CONFIG_PATH at it.
#
# Required:
#   MLFLOW_BACKEND_STORE_URI       postgresql://USER:PASSWORD@HOST:5432/mlflow
#   MLFLOW_AUTH_DATABASE_URI       postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow_auth (users, permissions)
#   MLFLOW_ARTIFACTS_DESTINATION   s3://BUCKET/mlflow-artifacts, or /mnt/nfs/mlflow-artifacts
#   MLFLOW_FLASK_SERVER_SECRET_KEY CSRF key of the auth app; the same on every replica
#   MLFLOW_AUTH_ADMIN_PASSWORD     the admin's password; needed on the first start (creates the admin)
# Optional:
#   MLFLOW_AUTH_ADMIN_USERNAME     default: admin
#   MLFLOW_DEFAULT_PERMISSION      READ (default), EDIT, MANAGE or NO_PERMISSIONS for other users
#   MLFLOW_HOST                    default 127.0.0.1 (0.0.0.0 inside a pod behind a ClusterIP Service)
#   MLFLOW_PORT                    default 5000
#   MLFLOW_WORKERS                 default 4
#   MLFLOW_UVICORN_OPTS            default "--timeout-worker-healthcheck 60": uvicorn kills a worker that
#                                  does not answer its health ping in time (5 s by default), which
#                                  on a loaded host turns into an endless restart loop
#   MLFLOW_ALLOWED_HOSTS           Host headers accepted, e.g. "mlflow,mlflow.ml.svc.cluster.local,localhost:*"
#   MLFLOW_RUNTIME_DIR             where the generated auth ini lives (default: a fresh mktemp -d)
#   MLFLOW_BIN                     the mlflow executable (default: mlflow on PATH)
#   AWS_* / instance role          for s3:// artifacts: the server (not the clients) needs S3 access
#
# Example (the rehearsal in tests/cluster/test_rehearsal.py runs exactly this script):
#   export MLFLOW_BACKEND_STORE_URI=... MLFLOW_AUTH_DATABASE_URI=... MLFLOW_ARTIFACTS_DESTINATION=...
#   export MLFLOW_FLASK_SERVER_SECRET_KEY=... MLFLOW_AUTH_ADMIN_PASSWORD=...
#   cluster/mlflow/start-server.sh
set -euo pipefail

missing=()
for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_ARTIFACTS_DESTINATION \
            MLFLOW_FLASK_SERVER_SECRET_KEY; do
  [[ -n "${!name:-}" ]] || missing+=("$name")
done
if ((${#missing[@]})); then
  echo "start-server.sh: missing environment variable(s): ${missing[*]}" >&2
  echo "  (they hold credentials: set them from your secret store, never in the repository)" >&2
  exit 2
fi
for uri in "$MLFLOW_BACKEND_STORE_URI" "$MLFLOW_AUTH_DATABASE_URI"; do
  case "$uri" in
    postgresql://*|postgresql+psycopg2://*) ;;
    *) echo "start-server.sh: expected a postgresql:// URI, got '${uri%%://*}://...'" >&2; exit 2 ;;
  esac
done

MLFLOW_BIN=${MLFLOW_BIN:-mlflow}
umask 077
runtime=${MLFLOW_RUNTIME_DIR:-$(mktemp -d -t mlflow-server.XXXXXX)}
mkdir -p "$runtime"
chmod 700 "$runtime"
config="$runtime/basic_auth.ini"
# The admin's name and password stay in the environment (MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD,
# which MLflow reads before the ini); only the auth database URI must be in the file.
cat > "$config" <<INI
[mlflow]
default_permission = ${MLFLOW_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
# MLflow 3's job runner (huey consumers for GenAI scorer jobs, which training runs never queue):
# 8 more processes per server, start-up 40 s instead of 20 on 2 busy cores. Set it to true to use them.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

args=(server
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI"
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  --serve-artifacts
  --app-name basic-auth
  --host "${MLFLOW_HOST:-127.0.0.1}"
  --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-4}"
  --uvicorn-opts "${MLFLOW_UVICORN_OPTS:---timeout-worker-healthcheck 60}")
if [[ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]]; then
  args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi
echo "start-server.sh: mlflow server on ${MLFLOW_HOST:-127.0.0.1}:${MLFLOW_PORT:-5000}," \
     "artifacts -> ${MLFLOW_ARTIFACTS_DESTINATION}, auth config ${config}" >&2
exec "$MLFLOW_BIN" "${args[@]}"
