#!/usr/bin/env bash
# Sourced by run-all.sh and test.sh: a virtualenv with the pinned requirements, and a .env file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
if ! sha256sum --status -c "$stamp" 2>/dev/null; then
    echo "setup: installing requirements.txt"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    sha256sum requirements.txt > "$stamp"
fi
if [ ! -f .env ]; then
    secret=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(40))')
    # Development: webhooks may reach receivers on this machine (.env.example's default refuses them).
    sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$secret|" \
        -e "s|^WEBHOOK_ALLOW_PRIVATE_NETWORKS=.*|WEBHOOK_ALLOW_PRIVATE_NETWORKS=true|" .env.example > .env
    echo "setup: wrote .env from .env.example with a new SECRET_KEY"
fi
export PATH="$PWD/.venv/bin:$PATH"
