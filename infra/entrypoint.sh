#!/bin/sh
# Container entrypoint: point DVC at the shared remote (the object store) and run the command.
# DVC's local config (.dvc/config.local) is per container, never baked into the image.
set -eu
cd /app
if [ -n "${ONCEFLOW_DVC_REMOTE:-}" ]; then
    mkdir -p .dvc
    {
        echo "[core]"
        echo "    remote = shared"
        # The image has no .git: a DVC repo without git needs no_scm.
        [ -d .git ] || echo "    no_scm = true"
        echo "['remote \"shared\"']"
        echo "    url = ${ONCEFLOW_DVC_REMOTE}"
        [ -z "${AWS_ENDPOINT_URL:-}" ] || echo "    endpointurl = ${AWS_ENDPOINT_URL}"
    } > .dvc/config.local
fi
exec "$@"
