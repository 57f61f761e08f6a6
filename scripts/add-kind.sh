#!/usr/bin/env bash
# Adds a shipped session kind (config/kinds.available/NAME.conf) to a configuration directory,
# installing its program first for a single-user machine: JupyterLab or Jupyter Notebook from
# PyPI into a virtual environment of its own (.drover-data/jupyter in the checkout).
# Usage: scripts/add-kind.sh jupyterlab|jupyter-notebook [CONFIG_DIR (default: config)]
# Restart droverd (scripts/run.sh) afterwards: the home page then offers the kind.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
config=${2:-config}
shipped=config/kinds.available/$kind.conf
if [ -z "$kind" ] || [ ! -f "$shipped" ]; then
    echo "add-kind.sh: name a shipped kind: $(cd config/kinds.available && ls *.conf | sed 's/\.conf$//' | tr '\n' ' ')" >&2
    exit 2
fi
source scripts/install-deps.sh
install_missing python3-venv
venv=$PWD/.drover-data/jupyter
jupyter_packages=(jupyterlab notebook)
bin=$(install_jupyter "$venv")
program=$(sed -n 's/^command=\["\([^"]*\)".*/\1/p' "$shipped")
mkdir -p "$config/kinds"
# The shipped file, with its program found in that environment rather than on each user's PATH.
# As root (auth-none in a container, say) sessions run as root, which Jupyter refuses without --allow-root.
root_flag=""
[ "$(id -u)" = 0 ] && root_flag='"--allow-root", '
sed "s|^command=\[\"$program\", |command=[\"$bin/$program\", $root_flag|" "$shipped" > "$config/kinds/$kind.conf"
echo "==> $config/kinds/$kind.conf: $bin/$program"
echo "==> restart droverd (bash scripts/run.sh); the home page offers '$kind' beside the default"
