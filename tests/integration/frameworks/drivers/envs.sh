#!/usr/bin/env bash
# The trainer frameworks' own environments, in which tests/integration/frameworks drives our adapters through each
# framework's released code. Idempotent: an environment whose stamp matches its recipe is left as it is.
#
#   bash tests/integration/frameworks/drivers/envs.sh              # all of them
#   bash tests/integration/frameworks/drivers/envs.sh verl trl-1.10  # some of them
#
# client      a fresh venv with `pip install ./clients` alone: the client installs without the server.
# verl        verl 0.9.1 --no-deps, plus Ray and the few packages its reward code imports.
# openrlhf    OpenRLHF 0.11.2 --no-deps, plus pylatexenc (its remote-reward module needs torch, transformers,
#             sympy, pylatexenc and aiohttp).
# trl-1.10    TRL 1.10.0, the oldest the project declares (MedixRewardSync).
# trl-1.14    TRL 1.14.0, the first that awaits async reward objects (MedixReward).
# trl-1.16    TRL 1.16.0, the newest release (MedixReward, AsyncGRPOTrainer's pickled reward functions).
# openrlhf-0.11.0  OpenRLHF 0.11.0 --no-deps, plus pylatexenc: the last release that sends empty lists to every
#             reward URL after the first (0.10.2-0.11.0), answered with empty lists.
# swift       ms-swift 4.6.0 --no-deps with trl 0.29.1 and peft 0.20.0 (it needs trl < 1.0), and the few packages its
#             plugin import and GRPO reward path import (modelscope, modelscope-hub, dacite, json-repair).
# slime       slime is not on PyPI: only the aiohttp its `remote_rm` posts with (its custom reward function is
#             driven in `client`).
# verifiers   verifiers 0.4.0 --no-deps, plus what `import verifiers.v1` and its CLI config import (renderers,
#             prime-pydantic-config, prime-sandboxes and its RPC stack, math-verify, ...), openai 2.44 and mcp 2.0.0
#             as it pins them (the project venv has newer ones).
# nemo-gym    nemo-gym 0.7.0 --no-deps --ignore-requires-python (it declares Python >= 3.13.14; its resources-server
#             path runs on 3.11), plus what its server modules import: hydra-core, omegaconf, orjson, itsdangerous,
#             yappi, pydot, wandb (reward_profile imports wandb.Histogram), platformdirs, and ray 2.58.0 (import-time
#             `importlib.metadata.version("ray")`; Ray itself is never started: the MediX server sets ray_enabled off).
#             openai 2.44.0 as it pins it (its config parser refuses another). Importing nemo_gym moves its install
#             root behind every other sys.path entry: drive_nemo_gym.py sets NEMO_GYM_EXTRA_ROOTS to keep it first.
#
# The framework environments are small overlays: their own site-packages come first and hold the framework at
# its pinned version (and whatever it pins differently); torch, transformers and the rest resolve from the project
# venv ($MEDIX_BASE_VENV, default .venv) through a .pth line. Nothing is installed into the project venv. Each of
# them also gets the medix-client wheel built from ./clients (re-installed when clients/ changes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
BASE="${MEDIX_BASE_VENV:-$ROOT/.venv}"
DEST="${MEDIX_FRAMEWORK_VENVS:-$ROOT/.venvs}"
PY_BASE="$BASE/bin/python"
[ -x "$PY_BASE" ] || { echo "envs.sh: no project venv at $BASE (run make setup)" >&2; exit 2; }

# name -> pip arguments. The recipe is the stamp: change a line and that environment is rebuilt from scratch.
declare -A RECIPE=(
  [client]="fresh"
  [verl]="--no-deps verl==0.9.1 ; ray==2.55.0 tensordict==0.10.0 hydra-core==1.3.8 omegaconf==2.3.0 codetiming==1.4.0 pyvers==0.1.0 orjson==3.13.0 msgpack==1.2.4"
  [openrlhf]="--no-deps openrlhf==0.11.2 ; pylatexenc==2.11"
  [trl-1.10]="--no-deps trl==1.10.0"
  [trl-1.14]="--no-deps trl==1.14.0"
  [trl-1.16]="--no-deps trl==1.16.0"
  [openrlhf-0.11.0]="--no-deps openrlhf==0.11.0 ; pylatexenc==2.11"
  [swift]="--no-deps ms-swift==4.6.0 trl==0.29.1 peft==0.20.0 modelscope==1.40.2 modelscope-hub==0.5.1 dacite==1.9.2 json-repair==0.64.6"
  [slime]="--no-deps aiohttp==3.14.5"
  [verifiers]="--no-deps verifiers==0.4.0 renderers==0.1.12 prime-pydantic-config==0.4.3 tomli==2.5.0 prime-sandboxes==0.5.1 connectrpc==0.11.1 protobuf-py==0.1.1 pyqwest==0.12.0 tenacity==9.2.1 aiofiles==25.1.0 tomli-w==1.2.0 math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2 openai==2.44.0 distro==1.9.0 mcp==2.0.0"
  [nemo-gym]="--no-deps --ignore-requires-python nemo-gym==0.7.0 ray==2.58.0 wandb==0.31.0 yappi==1.7.6 pydot==4.0.1 platformdirs==4.14.9 itsdangerous==2.2.0 orjson==3.13.0 openai==2.44.0 distro==1.9.0 ; hydra-core==1.3.8 omegaconf==2.3.0"
)
ORDER=(client verl openrlhf trl-1.10 trl-1.14 trl-1.16 openrlhf-0.11.0 swift slime verifiers nemo-gym)

clients_hash() {
  (cd "$ROOT" && find clients -type f \( -name '*.py' -o -name '*.toml' -o -name '*.jsonl' -o -name '*.md' \) \
     -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha1sum | sha1sum | cut -c1-16)
}

client_wheel() {
  # One wheel of ./clients per content hash, shared by every environment.
  local hash wheels
  hash="$(clients_hash)"
  wheels="$DEST/.wheels/$hash"
  if ! ls "$wheels"/medix_client-*.whl >/dev/null 2>&1; then
    rm -rf "$DEST/.wheels" && mkdir -p "$wheels"
    "$PY_BASE" -m pip wheel -q --no-deps "$ROOT/clients" -w "$wheels" > "$DEST/.wheels/build.log" 2>&1 \
      || { cat "$DEST/.wheels/build.log" >&2; exit 1; }
  fi
  ls "$wheels"/medix_client-*.whl
}

pip_logged() {
  # pip install into the environment; its output (including the expected complaints about the pins that an
  # overlay leaves unmet) goes to the environment's build log, shown only when pip fails.
  local env="$1"
  shift
  "$env/bin/python" -m pip install -q --disable-pip-version-check "$@" >> "$env/.build.log" 2>&1 \
    || { tail -n 60 "$env/.build.log" >&2; echo "envs.sh: pip install $* failed in $env" >&2; exit 1; }
}

build() {
  local name="$1" recipe="${RECIPE[$1]}" env="$DEST/$1" stamp start
  stamp="$recipe | python $("$PY_BASE" -c 'import sys; print(sys.version.split()[0])') | base $BASE"
  # The fresh client environment is rebuilt when the client's declared dependencies change.
  [ "$recipe" = "fresh" ] && stamp="$stamp | $(sha1sum "$ROOT/clients/pyproject.toml" | cut -c1-16)"
  if [ -f "$env/.medix-stamp" ] && [ "$(cat "$env/.medix-stamp")" = "$stamp" ]; then
    install_client "$name"
    return
  fi
  start=$SECONDS
  echo "envs.sh: building $env" >&2
  rm -rf "$env"
  "$PY_BASE" -m venv "$env"
  local pip=(pip_logged "$env") wheel
  wheel="$(client_wheel)"
  if [ "$recipe" = "fresh" ]; then
    "${pip[@]}" "$wheel"
  else
    local site base_site
    site="$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    base_site="$("$PY_BASE" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    echo "$base_site" > "$site/medix-project-venv.pth"
    local group args rest="$recipe"
    while [ -n "$rest" ]; do  # the recipe's groups, separated by " ; ", are installed one after another
      group="${rest%% ; *}"
      [ "$group" = "$rest" ] && rest="" || rest="${rest#* ; }"
      read -r -a args <<< "$group"
      "${pip[@]}" "${args[@]}"
    done
    "${pip[@]}" --no-deps "$wheel"
  fi
  # PyPI's torchvision breaks `import transformers` beside the CPU torch, and nothing here needs it.
  "$env/bin/python" -m pip uninstall -q -y torchvision 2>/dev/null || true
  clients_hash > "$env/.medix-client"
  echo "$stamp" > "$env/.medix-stamp"
  echo "envs.sh: $name built in $((SECONDS - start)) s, $(du -sh "$env" | cut -f1)" >&2
}

install_client() {
  # The environment is current; only re-install medix-client when clients/ changed since.
  local env="$DEST/$1" wheel
  [ "$(cat "$env/.medix-client" 2>/dev/null)" = "$(clients_hash)" ] && return
  wheel="$(client_wheel)"
  pip_logged "$env" --no-deps --force-reinstall "$wheel"
  clients_hash > "$env/.medix-client"
}

mkdir -p "$DEST"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${RECIPE[$name]:-}" ] || { echo "envs.sh: unknown environment $name (${ORDER[*]})" >&2; exit 2; }
done
# One builder at a time (make and a test run may both ask).
exec {lock}>"$DEST/.lock"
flock "$lock"
for name in "${names[@]}"; do
  build "$name"
done
