import os

# One thread unless the caller asks for more: CI re-runs the model and data tests with OMP_NUM_THREADS=2
# (and ATEN_CPU_CAPABILITY=avx2) to catch assertions that only hold for one kernel/thread configuration.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

try:
    _threads = max(1, int(os.environ["OMP_NUM_THREADS"].split(",")[0]))
except ValueError:
    _threads = 1
torch.set_num_threads(_threads)
