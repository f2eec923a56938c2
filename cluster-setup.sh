#!/usr/bin/env bash
# Every node's setup, run by `ray up` (the `setup_commands` of cluster.yaml and
# cluster-onprem.yaml) from the checkout it synced to ~/raygenre. It installs the project in a
# virtual environment, ~/raygenre-venv, and makes that environment the login shell's, so
# `ray start`, the jobs' `python` and every Ray worker use it.
#
# RAYGENRE_PYTHON (optional, set in the node's ~/.bashrc or ~/.profile): a Python whose
# environment already holds the pinned dependencies (torch, torchaudio, Ray). The venv is made
# from it and sees its packages, so only raygenre itself is installed: minutes of downloading
# saved on machines you keep, and what tests/test_launcher.py runs. Unset (a fresh AWS node):
# the venv is made from the system python3 and everything is installed from PyPI.
set -euo pipefail

venv="$HOME/raygenre-venv"
python="${RAYGENRE_PYTHON:-python3}"
# The set CI tests: Ray pinned as in pyproject.toml, torch and torchaudio as in constraints.txt
# (pyproject.toml gives them as a range; tests/test_cluster.py holds these equal).
pins=("torch==2.11.0" "torchaudio==2.11.0" "ray[default,data,train,tune]==2.60.0")

if ! "$python" -c 'import ensurepip' 2>/dev/null; then
  # Ubuntu ships python3 without venv support; its system pip refuses installs (PEP 668).
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

if [ -n "${RAYGENRE_PYTHON:-}" ]; then
  # A venv made from another venv's python starts from the base interpreter, not that
  # environment: a .pth file adds its site-packages after the venv's own.
  "$python" -c 'import site; print("\n".join(site.getsitepackages()))' \
    > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/raygenre-deps.pth"
  # Ray's console script lives in that environment's bin/, bound to its python: the node's
  # `ray` must run this venv's python, which sees the project installed below.
  printf '#!%s\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n' \
    "$venv/bin/python" > "$venv/bin/ray"
  chmod +x "$venv/bin/ray"
fi
# Already satisfied (nothing downloaded) where RAYGENRE_PYTHON provides them.
"$venv/bin/python" -m pip install -q "${pins[@]}"
cd ~/raygenre
"$venv/bin/python" -m pip install -q -e .
(git rev-parse --short HEAD 2>/dev/null || echo unknown) > ~/raygenre_revision

# Ray's launcher runs every command in a login shell that sources ~/.bashrc first.
line="source $venv/bin/activate  # raygenre (cluster-setup.sh)"
grep -qxF "$line" ~/.bashrc 2>/dev/null || echo "$line" >> ~/.bashrc
