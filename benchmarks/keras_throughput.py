"""Training images/s of the airbench network (imgcls's fastnet94) in Keras 3 on TensorFlow,
float32, NHWC; run by `throughput.py --keras-python` in its own environment, because
TensorFlow is never a dependency of imgcls:

    bash benchmarks/setup_keras_env.sh     # creates benchmarks/.venv-keras
    benchmarks/.venv-keras/bin/python benchmarks/keras_throughput.py --batch-size 512

Prints one JSON line: {"images_per_second": median, "rounds": [...], ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def airbench_net(keras, widths=(64, 256, 256), classes=10):
    """fastnet94 layer for layer: 2x2 whitening conv (24 filters), GELU, three groups of
    conv3x3 -> maxpool -> BN (no scale, momentum 0.6 = torch's 0.4) -> GELU -> conv3x3 -> BN
    -> GELU, global max-pool, bias-free linear head scaled by 1/width."""
    layers = keras.layers
    x = inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(24, 2, padding="valid", use_bias=True)(x)
    x = layers.Activation("gelu")(x)
    for width in widths:
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False)(x)
        x = layers.Activation("gelu")(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.6, epsilon=1e-12, scale=False)(x)
        x = layers.Activation("gelu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(classes, use_bias=False)(x)
    outputs = layers.Rescaling(1.0 / widths[-1])(x)
    return keras.Model(inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    n = args.batch_size * args.steps
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 32, 32, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, n), 10).astype("float32")
    model = airbench_net(keras)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.001, momentum=0.85, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit])
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # build + warm-up
    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
        rounds.append(n / (time.perf_counter() - start))
    print(json.dumps({"images_per_second": statistics.median(rounds), "rounds": rounds,
                      "keras": keras.__version__, "tensorflow": tf.__version__,
                      "jit_compile": args.jit, "threads": args.threads,
                      "parameters": model.count_params()}))


if __name__ == "__main__":
    main()
