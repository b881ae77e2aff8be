# Sourced by scripts/test and scripts/demo: make the project virtualenv .venv with python3
# (the one on PATH; PYTHON=... picks another), install rewardcore into it (editable, with the
# extension built in place) and put .venv/bin first on PATH.
#
# RC_DEPS=lock (the default) installs the versions pinned in constraints.txt (scripts/lock
# rewrites it); RC_DEPS=latest installs the newest releases instead. The install is redone
# only when pyproject.toml, setup.py, constraints.txt, ext/ or the wanted extras change.

rc_apt_install() {  # apt-get install the Debian packages given, once per script run
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "${0##*/}: installing $* with apt-get" >&2
    if [ -z "${RC_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq
        RC_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

rc_venv() {  # rc_venv EXTRAS: EXTRAS is "" or a comma-separated list such as "test,serve"
    local extras=$1 python=${PYTHON:-python3} deps=${RC_DEPS:-lock}
    case $deps in
        lock|latest) ;;
        *) echo "${0##*/}: RC_DEPS must be 'lock' or 'latest', not '$deps'" >&2; exit 2 ;;
    esac
    command -v "$python" >/dev/null || { echo "${0##*/}: no $python on PATH" >&2; exit 2; }

    if ! .venv/bin/python -c "" 2>/dev/null; then
        rm -rf .venv
        echo "${0##*/}: creating .venv with $("$python" -c 'import sys; print(sys.executable)')" >&2
        # Debian ships venv's ensurepip (and the C headers, below) apart from python3
        if ! "$python" -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            rc_apt_install python3-venv
            "$python" -m venv .venv
        fi
    fi
    if ! .venv/bin/python -c "import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then
        rc_apt_install python3-dev
    fi
    command -v cc >/dev/null || rc_apt_install gcc

    local stamp=.venv/.rewardcore-install key
    key=$(find pyproject.toml setup.py constraints.txt ext -type f ! -name '*.c' ! -name '*.html' \
          | LC_ALL=C sort | xargs cat | cksum | cut -d' ' -f1)
    if [ "$deps" = lock ] && [ -f "$stamp" ] && .venv/bin/python - "$stamp" "$key" "$extras" <<'PY'
import sys
path, key, extras = sys.argv[1:]
old_key, _, old_extras = open(path).read().strip().partition(" ")
def wanted(s): return {e for e in s.split(",") if e}
sys.exit(not (old_key == key and wanted(extras) <= wanted(old_extras)))
PY
    then
        export PATH="$PWD/.venv/bin:$PATH"
        return
    fi

    local pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
    if [ "$deps" = lock ]; then
        pip+=(-c constraints.txt)
    else
        pip+=(--upgrade --upgrade-strategy eager)
    fi
    # The build requirements go into .venv too and the build uses them (no isolated build
    # environment), so the extension is built with the same pinned Cython and numpy each time.
    echo "${0##*/}: installing rewardcore${extras:+[$extras]} into .venv ($deps versions)" >&2
    "${pip[@]}" setuptools cython numpy
    "${pip[@]}" --no-build-isolation -e ".${extras:+[$extras]}"
    rm -f "$stamp"
    [ "$deps" = lock ] && echo "$key $extras" > "$stamp"
    export PATH="$PWD/.venv/bin:$PATH"
}
