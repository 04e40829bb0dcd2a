"""`harness ARGV...` with the test plugins of `tests/plugins/bench_plugins` loaded too.

`tests/test_distributed_run.py` starts it as one process and under torchrun, the way a
user starts `python -m harness.cli` (`torchrun ... -m harness.cli run ...`):

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/harness_run_worker.py run suite.toml --quiet
"""

from __future__ import annotations

import sys

from harness.plugin import manager as plugin_manager
from harness.cli import main
from tests.plugins import bench_plugins

if __name__ == "__main__":
    plugin_manager._default = plugin_manager.load_plugins(
        extra=[("bench_plugins", bench_plugins)])
    sys.exit(main(sys.argv[1:]))
