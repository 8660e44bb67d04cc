#!/usr/bin/env bash
# The Keras 3 + TensorFlow environment for benchmarks/keras_throughput.py, kept apart from
# imgcls's own (TensorFlow is not a dependency of imgcls).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv-keras"
"$here/.venv-keras/bin/pip" install --quiet tensorflow-cpu keras
"$here/.venv-keras/bin/python" -c "import keras, tensorflow; print('keras', keras.__version__, 'tensorflow', tensorflow.__version__)"
