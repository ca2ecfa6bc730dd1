#!/usr/bin/env bash
# mypy cannot follow setuptools' editable-install finder, so type-check through a symlink tree
# that lays the folders out as the installed `corral` package. Prints the tree's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tree=$here/build/mypy
rm -rf "$tree" && mkdir -p "$tree/corral"
ln -sfn "$here/protos/corral/__init__.py" "$tree/corral/__init__.py"
ln -sfn "$here/protos/corral/py.typed" "$tree/corral/py.typed"
ln -sfn "$here/protos/corral/task.py" "$tree/corral/task.py"
ln -sfn "$here/protos/corral/dirs.py" "$tree/corral/dirs.py"
ln -sfn "$here/protos/corral/layers.py" "$tree/corral/layers.py"
ln -sfn "$here/protos/corral/protocol.py" "$tree/corral/protocol.py"
ln -sfn "$here/protos/corral/eventloop.py" "$tree/corral/eventloop.py"
ln -sfn "$here/protos/corral/v1" "$tree/corral/v1"
ln -sfn "$here/controller" "$tree/corral/controller"
ln -sfn "$here/agent" "$tree/corral/agent"
echo "$tree"
