#!/usr/bin/env bash
# Installs the official `openai` Python client (pinned in tests/server_openai/requirements.txt)
# into a virtual environment OUTSIDE the repository, for tests/server_openai.rs.
#   venv: $NEMO_OPENAI_VENV, default ${XDG_CACHE_HOME:-$HOME/.cache}/nemo-engine/openai-venv
# Idempotent: does nothing when the pinned versions are already there. Exits non-zero when the
# install fails; the tests then fail (never skip) and say to run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEMO_OPENAI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nemo-engine/openai-venv}"
requirements=tests/server_openai/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup-openai-client: $venv is up to date"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
"$venv/bin/python" -c "import openai; print('setup-openai-client: openai', openai.__version__, 'in $venv')"
echo "$want" > "$stamp"
