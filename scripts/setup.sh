#!/usr/bin/env bash
# Installs what Switchyard needs to build and test, when it is missing.
# Debian/Ubuntu: apt-get (as root, or through sudo). macOS: Homebrew.
set -euo pipefail
cd "$(dirname "$0")/.."  # the venv lives in the checkout, wherever this is run from

need_apt=()
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

if [ "$(uname -s)" = "Darwin" ]; then
    command -v brew >/dev/null || { echo "setup: install Homebrew, then: brew install hiredis redis" >&2; exit 1; }
    brew list hiredis >/dev/null 2>&1 || brew install hiredis
    brew list redis >/dev/null 2>&1 || brew install redis
    brew list cmake >/dev/null 2>&1 || brew install cmake
else
    # prometheus brings promtool (the /metrics test); chromium the dashboard's browser test.
    # cmake, make and g++ build llama.cpp's llama-server (below); cmake only recommends make.
    for pkg in redis-server redis-tools libhiredis-dev libcurl4-openssl-dev pkg-config prometheus chromium cmake make g++; do
        have_pkg "$pkg" || need_apt+=("$pkg")
    done
    if [ ${#need_apt[@]} -gt 0 ]; then
        echo "setup: installing ${need_apt[*]}"
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    fi
fi

command -v swift >/dev/null || { echo "setup: Swift 6 is required (https://www.swift.org/install)" >&2; exit 1; }

# The local-model path is tested against a real llama.cpp server: llama-cpp-python's
# OpenAI-compatible server in a virtual environment, with a tiny model the project generates
# itself (tools/tinymodel). llama-cpp-python builds llama.cpp from source: 10-15 minutes on two
# cores the first time; pip caches the wheel for later installs.
venv="${SWITCHYARD_LLAMA_VENV:-$PWD/.venv-llama}"
if ! "$venv/bin/python" -c 'import llama_cpp.server, gguf' >/dev/null 2>&1; then
    command -v python3 >/dev/null || { echo "setup: python3 is required" >&2; exit 1; }
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get install -y -q python3-venv
    fi
    echo "setup: building llama-cpp-python into $venv (one time; about 10-15 minutes on 2 cores)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" "$venv/bin/pip" install --progress-bar off \
        'llama-cpp-python[server]==0.3.36' 'gguf==0.19.0' 2>&1 | grep -v -E '^\s*$' | sed 's/^/setup: /' | tail -n 20
    "$venv/bin/python" -c 'import llama_cpp.server, gguf' || { echo "setup: llama-cpp-python did not install" >&2; exit 1; }
fi
# llama.cpp's own server, llama-server (the GPU profiles' model server), built for the CPU from the
# llama.cpp sources that the same llama-cpp-python release vendors (its source distribution on
# PyPI), into a cache shared by every checkout on the machine (like pip's): about 20 minutes on two
# cores the first time.
server_dir="${SWITCHYARD_LLAMA_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/llama-server-0.3.36}"
if [ ! -x "$server_dir/bin/llama-server" ]; then
    echo "setup: building llama.cpp's llama-server into $server_dir (one time; about 20 minutes on 2 cores)"
    mkdir -p "$server_dir/bin"
    # A build directory of its own, so two setups at once do not share one; the binary is moved
    # into place whole, once it runs.
    work="$(mktemp -d "$server_dir/build.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    "$venv/bin/pip" download -q --progress-bar off --no-deps --no-binary llama-cpp-python 'llama-cpp-python==0.3.36' \
        -d "$work" 2>&1 | sed 's/^/setup: /' | tail -n 5
    tar -xzf "$work/llama_cpp_python-0.3.36.tar.gz" -C "$work"
    llama_src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
    [ -f "$llama_src/tools/server/CMakeLists.txt" ] || { echo "setup: the sdist has no llama.cpp server sources" >&2; exit 1; }
    # Static, so the binary stands alone; no web UI (it would be downloaded), no curl, no OpenSSL.
    # Tuned for this CPU (GGML_NATIVE): the cache belongs to the machine.
    if ! cmake -S "$llama_src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        >"$work/configure.log" 2>&1; then
        tail -n 30 "$work/configure.log" | sed 's/^/setup: /' >&2
        echo "setup: configuring llama-server failed" >&2
        exit 1
    fi
    if ! cmake --build "$work/build" --target llama-server -j "$(nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)" \
        >"$work/build.log" 2>&1; then
        grep -E 'error' "$work/build.log" | tail -n 20 | sed 's/^/setup: /' >&2
        tail -n 10 "$work/build.log" | sed 's/^/setup: /' >&2
        echo "setup: building llama-server failed" >&2
        exit 1
    fi
    "$work/build/bin/llama-server" --version >/dev/null 2>&1 || { echo "setup: the llama-server built does not run" >&2; exit 1; }
    cp "$work/build/bin/llama-server" "$server_dir/bin/llama-server.$$"
    mv -f "$server_dir/bin/llama-server.$$" "$server_dir/bin/llama-server"
    rm -rf "$work"
    trap - EXIT
    echo "setup: built $server_dir/bin/llama-server"
fi
# The OpenAI-compatible front is tested with the official openai package, in the same venv.
if ! "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
    "$venv/bin/pip" install -q --progress-bar off 'openai>=1.50,<3' | sed 's/^/setup: /' | tail -n 5
    "$venv/bin/python" -c 'import openai' || { echo "setup: the openai package did not install" >&2; exit 1; }
fi
# The deploy files' validators (scripts/validate-deploy.sh), pinned, in a venv of their own.
# check-jsonschema needs Python 3.11 or later (Debian bookworm's python3 is 3.11).
vvenv="$PWD/.venv-validate"
if ! "$vvenv/bin/python" -c 'import check_jsonschema, kubernetes_validate, yamllint, yaml, jsonschema' >/dev/null 2>&1; then
    echo "setup: installing the deploy validators into $vvenv"
    python3 -m venv "$vvenv"
    "$vvenv/bin/pip" install -q --progress-bar off check-jsonschema==0.39.0 kubernetes-validate==1.37.0 yamllint==1.38.0 \
        | sed 's/^/setup: /' | tail -n 5
    "$vvenv/bin/python" -c 'import check_jsonschema, kubernetes_validate, yamllint, yaml, jsonschema' \
        || { echo "setup: the deploy validators did not install" >&2; exit 1; }
fi
# A redis-server that the package's post-install started is not used by the tests: each test
# starts a private one on a free port.
