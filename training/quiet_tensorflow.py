"""Import TensorFlow without the C++ start-up lines that read as errors on a CPU machine.

TensorFlow 2.21's native libraries print, before absl's logging is set up
and so whatever `TF_CPP_MIN_LOG_LEVEL` says, lines such as "All log
messages before absl::InitializeLog() is called are written to STDERR",
"oneDNN custom operations are on", "Could not find cuda drivers on your
machine" and "failed call to cuInit: ... UNKNOWN ERROR (303)". Those are
notices, not errors, but a user sees them first. Here the process's
standard error (file descriptor 2, which C++ writes to) is captured while
TensorFlow loads and looks for devices, and every line except the known
notices is written back. Set `TF_CPP_MIN_LOG_LEVEL` to 0, 1 or 2 to see
them all again.
"""

import importlib.util
import os
import re
import sys
import tempfile

NOTICES = re.compile(
    rb"All log messages before absl::InitializeLog|oneDNN custom operations are on|Could not find cuda drivers"
    rb"|failed call to cuInit|This TensorFlow binary is optimized to use available CPU instructions"
    rb"|To enable the following instructions|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning"
    rb"|computation placer already registered|cuda_executor|cuda_diagnostics|kernel driver does not appear"
)


def verbose():
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3"


def import_tensorflow():
    """`import tensorflow` (and its device discovery) with the start-up notices filtered out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if importlib.util.find_spec("tensorflow") is None:
        return None  # the importing module's own `import tensorflow` says so
    if "tensorflow" in sys.modules or verbose():
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # where cuInit runs
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not NOTICES.search(line):
                    sys.stderr.buffer.write(line)
            sys.stderr.flush()
    return tensorflow
