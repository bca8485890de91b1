"""List the ops of an export, and those a stock TF Serving 2.20 binary does not register.

    python -m training.list_ops saved_models/dates

Prints, as JSON, the export's custom ops (registered by libraries such as
tensorflow-text, not by core TensorFlow), its XLA-only ops, and the ops
outside `STOCK_OPS`: what TensorFlow 2.20 and tensorflow-text 2.20 register,
the two that TF Serving 2.20.0 pins and links (its model server links
TensorFlow's kernels and tensorflow-text's `ops_lib`, SentencePiece
included). Exits 1 when an op falls outside that set or is XLA-only, 0
otherwise: a SentencePiece export runs on the stock server.

The op set is a file of this checkout, written from that runtime by

    python -m training.list_ops --write-stock-ops .venv-tf2.20/bin/python

(`.venv-tf2.20/` is the environment `tests/test_stock_serving.py` makes,
which also checks that the file is what that runtime registers). Runs
without importing tensorflow-text, so its ops show up as custom.
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STOCK_OPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stock_ops_tf_serving_2.20.txt")

# Run in the stock runtime: every op its TensorFlow and tensorflow-text register.
_REGISTERED_OPS = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
import tensorflow_text as text
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api
ops = op_def_pb2.OpList()
ops.ParseFromString(c_api.TF_GetBuffer(c_api.TF_GetAllOpList()))
print(json.dumps({"tensorflow": tf.__version__, "tensorflow_text": text.__version__,
                  "ops": sorted({op.name for op in ops.op})}))
"""


def registered_ops(python):
    """`{"tensorflow", "tensorflow_text", "ops"}` of the runtime whose interpreter is `python`."""
    result = subprocess.run([python, "-c", _REGISTERED_OPS], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{python} could not list its ops:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def read_stock_ops(path=STOCK_OPS):
    """The op names of the stock-runtime file (comment lines start with #)."""
    with open(path, encoding="utf-8") as file:
        return {line.strip() for line in file if line.strip() and not line.startswith("#")}


def outside_stock_ops(saved_model_dir):
    """The export's ops that stock TF Serving 2.20's runtime does not register (`STOCK_OPS`), sorted."""
    from tf_transformer.export import graph_ops

    return sorted(graph_ops(saved_model_dir) - read_stock_ops())


def write_stock_ops(python, path=STOCK_OPS):
    found = registered_ops(python)
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"# The ops TensorFlow {found['tensorflow']} and tensorflow-text {found['tensorflow_text']} register:\n"
                   "# stock TF Serving 2.20.0's runtime. Written by\n"
                   "# python -m training.list_ops --write-stock-ops .venv-tf2.20/bin/python\n")
        file.writelines(op + "\n" for op in found["ops"])
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.list_ops", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", help="export directory (newest version) or one version")
    parser.add_argument("--write-stock-ops", metavar="PYTHON",
                        help=f"write {os.path.basename(STOCK_OPS)} from the runtime of this interpreter, and stop")
    args = parser.parse_args(argv)
    if args.write_stock_ops:
        found = write_stock_ops(args.write_stock_ops)
        print(f"{len(found['ops'])} ops of TensorFlow {found['tensorflow']} + tensorflow-text "
              f"{found['tensorflow_text']} written to {STOCK_OPS}")
        return 0
    if not args.model:
        parser.error("the export directory is required")
    from tf_transformer.export import latest_version, non_core_ops

    path = latest_version(args.model)
    found = non_core_ops(path)
    outside = outside_stock_ops(path)
    print(json.dumps({"saved_model": path, **found, "outside_stock_tf_serving_2.20": outside,
                      "runs_on_stock_tf_serving_2.20": not outside and not found["xla"]}, indent=2))
    return 1 if outside or found["xla"] else 0


if __name__ == "__main__":
    sys.exit(main())
