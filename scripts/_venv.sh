# Sourced by scripts/test and scripts/demo: make the project virtualenv .venv with python3
# (the one on PATH; PYTHON=... picks another), install rewardcore into it (editable, with the
# extension built in place) and put .venv/bin first on PATH.
#
# RC_DEPS=lock (the default) installs the versions pinned in constraints.txt (scripts/lock
# rewrites it); RC_DEPS=latest upgrades every requirement to its newest release instead. The
# editable install (and the extension's build) is redone only when pyproject.toml, setup.py,
# constraints.txt, ext/, RC_DEPS or the wanted extras change.

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

    # The stamp says what the last install was: inputs' checksum, RC_DEPS, extras.
    local stamp=.venv/.rewardcore-install key
    key=$(find pyproject.toml setup.py constraints.txt ext -type f ! -name '*.c' ! -name '*.html' \
          | LC_ALL=C sort | xargs cat | cksum | cut -d' ' -f1)
    local pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
    if [ "$deps" = latest ]; then
        # the newest releases of every requirement (build ones included), checked each run;
        # the extension is rebuilt only when its inputs changed
        echo "${0##*/}: upgrading the requirements of rewardcore${extras:+[$extras]} in .venv" >&2
        mapfile -t reqs < <(.venv/bin/python - "$extras" <<'PY'
import sys, tomllib
meta = tomllib.load(open("pyproject.toml", "rb"))
extras = meta["project"].get("optional-dependencies", {})
reqs = meta["build-system"]["requires"] + meta["project"]["dependencies"]
for extra in filter(None, sys.argv[1].split(",")):
    reqs += extras[extra]
print("\n".join(reqs))
PY
)
        "${pip[@]}" --upgrade --upgrade-strategy eager "${reqs[@]}"
    fi
    if [ -f "$stamp" ] && .venv/bin/python - "$stamp" "$key $deps" "$extras" <<'PY'
import sys
path, key, extras = sys.argv[1:]
old_key, old_deps, old_extras = (open(path).read().split() + ["", "", ""])[:3]
def wanted(s): return {e for e in s.split(",") if e}
sys.exit(not (f"{old_key} {old_deps}" == key and wanted(extras) <= wanted(old_extras)))
PY
    then
        export PATH="$PWD/.venv/bin:$PATH"
        return
    fi

    echo "${0##*/}: installing rewardcore${extras:+[$extras]} into .venv ($deps versions)" >&2
    rm -f "$stamp"
    if [ "$deps" = lock ]; then
        # The build requirements go into .venv too and the build uses them (no isolated
        # build environment), so the extension is built with the pinned Cython and numpy.
        "${pip[@]}" -c constraints.txt setuptools cython numpy
        "${pip[@]}" -c constraints.txt --no-build-isolation -e ".${extras:+[$extras]}"
    else
        "${pip[@]}" --no-build-isolation --no-deps -e .
    fi
    echo "$key $deps ${extras:-,}" > "$stamp"
    export PATH="$PWD/.venv/bin:$PATH"
}
