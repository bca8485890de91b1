"""List the ops of an export that a stock TF Serving binary may not have.

    python -m training.list_ops saved_models/dates

Prints the custom ops (registered by libraries such as tensorflow-text, not
by core TensorFlow) and the XLA-only ops; exits 1 when there is any.
Runs without importing tensorflow-text, so its ops show up as custom.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.list_ops", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="export directory (newest version) or one version")
    args = parser.parse_args(argv)
    from tf_transformer.export import latest_version, non_core_ops

    path = latest_version(args.model)
    found = non_core_ops(path)
    print(json.dumps({"saved_model": path, **found}, indent=2))
    return 1 if found["custom"] or found["xla"] else 0


if __name__ == "__main__":
    sys.exit(main())
