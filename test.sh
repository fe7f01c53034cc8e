#!/usr/bin/env bash
# The test command: installs the programs the tests run beside tandem when
# any is missing (tests/programs.txt), then runs `cargo test` with this
# script's arguments.
#
# Installing takes root: as root it runs apt-get itself, otherwise through
# sudo (which may ask for a password on a terminal). If it cannot install,
# it prints the one command that does, and stops before building anything.
set -euo pipefail
cd "$(dirname "$0")"
# HAProxy installs to /usr/sbin, which a user's PATH often lacks.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
packages=()
while read -r program package; do
    [[ -z "$program" || "$program" == \#* ]] && continue
    if ! command -v "$program" >/dev/null 2>&1; then
        missing+=("$program")
        [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
    fi
done <tests/programs.txt

if ((${#missing[@]} > 0)); then
    install="apt-get update && apt-get install -y --no-install-recommends ${packages[*]}"
    cannot() {
        echo "test.sh: the tests run ${missing[*]}, which this machine lacks, and $1." >&2
        echo "Install them with:" >&2
        echo >&2
        echo "    sudo sh -c '$install'" >&2
        echo >&2
        echo "then run ./test.sh again." >&2
        exit 1
    }
    command -v apt-get >/dev/null 2>&1 ||
        cannot "there is no apt-get here; install the packages ${packages[*]} (Debian's names) by hand"
    if [[ "$(id -u)" == 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && { [[ -t 0 ]] || sudo -n true 2>/dev/null; }; then
        as_root=(sudo)
    else
        cannot "installing them needs root or sudo"
    fi
    echo "test.sh: installing ${packages[*]} (for ${missing[*]})" >&2
    # The packages must not start Prometheus or HAProxy services: the tests
    # start their own, and nothing else should be left listening. An exit
    # status of 101 from policy-rc.d forbids service starts during the
    # install; a policy the machine already has is left as it is.
    policy=/usr/sbin/policy-rc.d
    placed_policy=false
    if [[ ! -e "$policy" ]]; then
        placed_policy=true
        trap '"${as_root[@]}" rm -f "$policy"' EXIT
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null ||
            cannot "writing $policy failed"
        "${as_root[@]}" chmod 755 "$policy"
    fi
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive sh -c "$install" ||
        cannot "apt-get failed (see above)"
    if "$placed_policy"; then
        "${as_root[@]}" rm -f "$policy"
        trap - EXIT
    fi
    still=()
    for program in "${missing[@]}"; do
        command -v "$program" >/dev/null 2>&1 || still+=("$program")
    done
    ((${#still[@]} == 0)) || cannot "after the install ${still[*]} is still not on PATH"
fi

exec cargo test "$@"
