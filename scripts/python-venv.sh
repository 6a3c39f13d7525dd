# Sourced by the scripts that run a Python tool (deny.sh, fuzz.sh): `python_venv VENV
# PIP_ARGS...` makes a fresh virtualenv at VENV and pip-installs PIP_ARGS into it,
# installing python3 and its venv module from Debian first when the machine lacks them.
# The caller defines `log`.
python_venv() {
    local venv="$1"
    shift
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        log "installing python3 and python3-venv from Debian"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}
