"""k-diffusion's `sampling` module, found, read and loaded without its training stack.

The package's `__init__` imports its training code (torchvision, scikit-image, kornia,
wandb, ...). `k_diffusion/sampling.py` needs none of it: it imports scipy, torchdiffeq,
torchsde and tqdm, and one helper of `k_diffusion.utils`, `append_dims`. Installed
without that stack (`pip install --no-deps k-diffusion`, as tox does), the package does
not import, but its `sampling.py` loads on its own under a private module name, given
that helper. This module is the project's one loader of it (the adapter, the tests and
the benchmarks use it):

* `source()`: the installed `sampling.py`, or None when k-diffusion is not installed
  (asked of `importlib.util.find_spec`, which imports nothing);
* `signatures(path)`: each `sample_*` function's signature and docstring, read from the
  source without loading the module: registering the samplers then costs a parse of
  one file, not the ~0.3 s of CPU that importing scipy and torchsde takes on every
  `harness` command (a fifth of `import torch`; `benchmarks/test_cli_latency.py`);
* `load()`: the module itself, once per process, when a sampler first runs:
  `import k_diffusion.sampling` when the package imports, else `sampling.py` alone. An
  error of `sampling.py`'s own (torchsde missing) is raised, not hidden.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import types
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

#: The prefix of k-diffusion's sampler functions (`sample_euler`, `sample_dpmpp_2m`, ...).
PREFIX = "sample_"
#: Where `sampling.py` lands when the package cannot be imported.
PRIVATE = "_kdiffusion_sampling_alone"


class Loaded(NamedTuple):
    """k-diffusion's sampling module, its version, and how it was loaded."""

    module: types.ModuleType
    version: str
    how: str


def source() -> Path | None:
    """The installed `k_diffusion/sampling.py`; None when k-diffusion is not installed."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    return path if path.is_file() else None


def signatures(path: Path) -> dict[str, tuple[inspect.Signature, str]]:
    """`sample_*` function name (without the prefix) -> (its signature, its docstring).

    Each function's header alone is compiled and run, with an empty body and no
    decorators: its defaults are evaluated as when the module loads (they are plain
    expressions, `float('inf')`, `1 / 2`) and its annotations, if any, are kept as
    strings (postponed), so nothing the module imports is needed.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    headers = [node for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name.startswith(PREFIX)]
    docs = {node.name: ast.get_docstring(node) or "" for node in headers}
    for node in headers:
        node.decorator_list, node.body = [], [ast.Pass()]
    postponed = ast.parse("from __future__ import annotations").body
    module = ast.fix_missing_locations(ast.Module(postponed + headers, type_ignores=[]))
    namespace: dict[str, object] = {}
    # The library's own code (defaults only), which loading the module would run anyway.
    exec(compile(module, str(path), "exec", dont_inherit=True), namespace)  # noqa: S102
    return {name[len(PREFIX):]: (inspect.signature(namespace[name]), doc)
            for name, doc in docs.items()}


@functools.cache
def load() -> Loaded | None:
    """k-diffusion's sampling module, or None when k-diffusion is not installed."""
    path = source()
    if path is None:
        return None
    version = importlib.metadata.version("k-diffusion")
    try:
        return Loaded(importlib.import_module("k_diffusion.sampling"), version, "imported")
    # What the training stack raises when absent (ImportError) or built for another
    # torch (torchvision's extension: RuntimeError, OSError). sampling.py's own errors
    # come again from loading it alone.
    except (ImportError, RuntimeError, OSError) as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return Loaded(_load_alone(path), version,
                  f"its sampling.py loaded alone (the package import failed: {reason})")


def _load_alone(path: Path) -> types.ModuleType:
    """`sampling.py` as the module `PRIVATE.sampling`, in a package whose `utils` holds
    the one helper it uses."""
    package = types.ModuleType(PRIVATE)
    package.__path__ = [str(path.parent)]
    utils = types.ModuleType(f"{PRIVATE}.utils")
    utils.append_dims = append_dims
    package.utils = utils
    spec = importlib.util.spec_from_file_location(f"{PRIVATE}.sampling", path)
    module = importlib.util.module_from_spec(spec)
    added = {PRIVATE: package, utils.__name__: utils, spec.name: module}
    sys.modules.update(added)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in added:
            sys.modules.pop(name, None)
        raise
    return module


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """x with trailing axes of size 1 up to `ndim` axes: k-diffusion broadcasts a (B,)
    noise level over a (B, ...) state with it."""
    if x.ndim > ndim:
        raise ValueError(f"cannot extend a tensor of {x.ndim} axes to {ndim}")
    return x[(...,) + (None,) * (ndim - x.ndim)]
