"""Captured sampling loops: a trial's sampler call compiled as one graph per batch shape.

With `capture = "compiled"` the runner draws every batch through

    torch.compile(sampler call, fullgraph=True, dynamic=False)

compiled once per (trial, batch size) at warm-up, untimed: on CUDA with mode
"reduce-overhead" (inductor's kernels recorded once as a CUDA graph, then replayed with no
per-kernel launch cost), on the CPU inductor's fused C++ kernels. The grid and the
hyperparameters are constants of the graph, so each trial compiles its own.

What can be captured. `fullgraph=True` refuses whatever does not fit in one graph: a
branch on a tensor's value (`if x.max() > 1`, `bool(x)`), printing, I/O, a per-step
callback. Such a sampler runs eagerly, with the reason recorded in the trial's `capture`
parameter; so does one whose captured output disagrees with the eager one (below).

Noise. Each draw is traced into the graph (`traced_normals`): the counters, the Philox
rounds and Box-Muller, as `harness.core.noise.normals_at` defines them, fused by inductor
with the sampler's update that reads them, so a stochastic step makes no pass of its own
over the noise. The integers are the eager stream's bit for bit (int64 arithmetic is exact
in any compiled code); the normals take inductor's log, sqrt, cos and sin, not ATen's,
and so differ from the eager draw's by a unit or two in the last place of float32 on some
of them (`harness.core.fused_noise` gives the measured shares), which the check below
allows for. Measured on the 64-D oracle at batch 4096 (CPU, 10 Karras steps), against the
same number of calls of the network compiled alone: Euler-Maruyama 1.16-1.36 over six
runs of one day (`results/microbench/oracle.md`), where each draw as one opaque operator
running the bit-identical draw cost 1.6-1.7. A trial's `noise_backend` parameter says
that its draws were traced.

Counting. Inside the graph the sampler sees the bare model: a counter there would be a
Python side effect that dynamo guards on (its value changes, so every call would
recompile), and the network clock reads the host's clock. Since a full graph has no
data-dependent control flow, the network calls of one replay are fixed by the shapes and
constants it was compiled for: they are counted once, on the runner's counted wrappers,
in the eager run of the same call at warm-up, and added per replay (counted at capture
time x replays). A sampler whose calls depend on the data cannot be captured at all, so
it never reaches this count.

The network clock. The network's kernels run fused inside one graph, so the time of its
calls cannot be told apart from the sampler's: a captured trial records no `network_s`
and no `overhead_ratio` (never a ratio measured against another run).

Never a wrong number. At warm-up, for each batch size, the loop is compiled on the first
batch and then checked on another batch of that size (so that an input baked into the
graph at capture shows): captured and eager samples must agree, per sample i, as

    |captured_i - eager_i| / |eager_i| <= CAPTURE_RTOL[dtype]   for 90 % of the batch.

Not for every sample: the sampling map of a multimodal target is ill-conditioned near the
boundaries between modes, where the rounding of *any* float32 run moves a few samples far.
Measured on the 64-D oracle mixture, 4096 samples, 10 Karras steps: the captured-vs-eager
per-sample error has median 1e-6, 90th percentile 5e-6 to 7e-6 and maximum 5e-4 (Euler)
to 1.6e-2 (Heun), the same as eager float32 against eager float64 (9e-7, 5e-6, 8e-4 and
2.4e-2): rounding, not capture. In float64 the bound is the noise's: its normals are
float32 numbers on either side, and the traced ones differ from the eager ones in the last
place of float32 on some values (above). Measured in float64 on the same case, the
stochastic samplers (Euler-Maruyama, Langevin, predictor-corrector, lambda-SDE) give a
median of 2.5e-8 to 3.5e-8, a 90th percentile of 3.9e-8 to 6.7e-8 and a maximum of 6e-6
to 1.4e-5; Euler and Heun, which draw only x_T outside the loop, 1e-15 and 4e-15 to
8e-15. A fault of the capture (a wrong draw, a stale input, a wrong kernel) moves every
sample by far more than 1e-4; one confined to fewer than a tenth of a batch's samples
would pass this check.
"""

from __future__ import annotations

import math
import re
import sysconfig
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from ...core.counting import CountedModel, NFECounter
from ...core.fused_noise import draw_words
from ...core.model import ScoreModel
from ...core.noise import SampleNoise, check_draw_number
from ...core.philox import WORDS, box_muller_inputs
from ...core.sampler import Sampler

#: Per-sample |captured - eager| / |eager| that 90 % of a batch must not exceed.
CAPTURE_RTOL = {torch.float32: 1e-4, torch.float64: 1e-6}
#: How a captured trial's noise is drawn (its logged `noise_backend`).
CAPTURED_NOISE = ("traced (fused into the captured loop with inductor's log, sqrt, cos "
                  "and sin: the eager integers, normals within float32 rounding)")
#: The share of a batch held to CAPTURE_RTOL.
CHECKED_SHARE = 0.9
#: Enough compiled graphs for a suite's trials x batch sizes, which all share one frame.
_GRAPHS_PER_LOOP = 1024

#: The runner's batch draw: sample `indices` on `network`, counting the sampler's
#: evaluations in `evaluations`, through `sampler` (the trial's, or a captured one).
Draw = Callable[..., Tensor]


def traced_normals(index: Tensor, round_keys: Tensor, draw: int, numel: int,
                   dtype: torch.dtype) -> Tensor:
    """Draw `draw` of the samples with index words `index` under `round_keys`, (B, numel),
    written for dynamo to trace: `harness.core.noise.normals_at`'s counters and rounds
    (`draw_words`), and `harness.core.philox.normal_from_bits`' Box-Muller without its
    writes into strided views, which dynamo refuses."""
    check_draw_number(draw)
    groups = -(-numel // WORDS)
    number = torch.full((), draw, dtype=torch.int64, device=index.device)
    uniform, angle = box_muller_inputs(draw_words(index, round_keys, number, groups))
    radius = uniform.log().mul(-2.0).sqrt()
    normals = torch.stack((radius * angle.cos(), radius * angle.sin()), -1)
    return normals.flatten(1)[:, :numel].to(dtype)


class CapturableNoise:
    """The draws of `noise` (after its own, the initial state's), traced into a compiled
    loop: its index words and round keys graph inputs, the draw number a constant."""

    def __init__(self, noise: SampleNoise):
        self.shape = (len(noise), *noise.shape)
        self.numel = math.prod(noise.shape)
        self.index, self.round_keys = noise.index_words, noise.round_keys
        self.dtype = noise.dtype
        self.draws = noise.draws

    def __call__(self, like: Optional[Tensor] = None) -> Tensor:
        if like is not None and tuple(like.shape) != self.shape:
            raise ValueError(f"noise requested for shape {tuple(like.shape)}, but this "
                             f"source draws {self.shape}")
        out = traced_normals(self.index, self.round_keys, self.draws, self.numel,
                             self.dtype)
        self.draws += 1
        return out.reshape(self.shape)


class CapturedLoop:
    """`sampler`, called like a sampler, compiled whole per batch shape (module docstring).

    `mode` says how it runs: "compiled (...)" or, once anything refused the capture,
    "eager (why)"; from then on every call is the sampler's own.
    """

    def __init__(self, sampler: Sampler, device: torch.device):
        self.sampler = sampler
        self.cuda = torch.device(device).type == "cuda"
        options = {"mode": "reduce-overhead"} if self.cuda else {}
        self.compiled = torch.compile(self._loop, fullgraph=True, dynamic=False, **options)
        self.mode = ("compiled (inductor, CUDA graphs)" if self.cuda
                     else "compiled (inductor)")

    @property
    def captured(self) -> bool:
        return self.mode.startswith("compiled")

    def make_params(self, values: Any = None) -> Any:
        return self.sampler.make_params(values)

    def refuse(self, reason: str) -> None:
        """Run eagerly from now on, saying why."""
        if self.captured:
            self.mode = f"eager ({reason})"

    def _loop(self, model: ScoreModel, x: Tensor, grid: Any, noise: CapturableNoise,
              params: Any) -> Tensor:
        return self.sampler(model, x, grid, noise, None, params)

    def __call__(self, model: ScoreModel, x: Tensor, grid: Any, noise: SampleNoise,
                 callback: Any = None, params: Any = None) -> Tensor:
        if not self.captured or callback is not None:
            return self.sampler(model, x, grid, noise, callback, params)
        params = self.sampler.make_params() if params is None else params
        if self.cuda:  # a new replay: the previous one's outputs are not read again
            torch.compiler.cudagraph_mark_step_begin()
        with torch._dynamo.config.patch(recompile_limit=_GRAPHS_PER_LOOP,
                                        fail_on_recompile_limit_hit=True):
            out = self.compiled(model, x, grid, CapturableNoise(noise), params)
        # A CUDA graph's output lives in its pool, overwritten by the next replay.
        return out.clone() if self.cuda else out


#: Where a refusal's frames are no one's sampler code: Python's library and torch's.
_NOT_OWN = (sysconfig.get_paths()["stdlib"], str(Path(torch.__file__).parent))
_SENTENCE_END = re.compile(r"(?<=[.`])\s+(?=[A-Z])")


def _why(err: BaseException) -> str:
    """A refusal in one line: the error, the first sentence of dynamo's explanation, and
    the innermost line of code outside Python's standard library that it stopped in (a
    sampler's `print`, an adapted library's file access), torch's own left out too."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    why = f"{type(err).__name__}: {lines[0] if lines else ''}"
    why += "".join(f" ({_SENTENCE_END.split(line.removeprefix('Explanation: '))[0]})"
                   for line in lines if line.startswith("Explanation: "))
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text)
    own = [frame for frame in frames if not frame[0].startswith(_NOT_OWN)] or frames
    if own:
        path, line, function = own[-1]
        why += f" at {Path(path).name}:{line} in {function}"
    return why


class CapturedDraw:
    """A trial's batch draw with its sampler captured: prepared once per trial (untimed),
    then called like the runner's draw, `(indices, network, evaluations)`, adding to
    `network`'s and `evaluations`' counters what the eager call counted at warm-up."""

    def __init__(self, draw: Draw, loop: CapturedLoop):
        self.draw = draw
        self.loop = loop
        self.model: Optional[ScoreModel] = None
        #: Batch size -> the counts of one eager call: (network, evaluations).
        self.counts: dict[int, tuple[NFECounter, NFECounter]] = {}

    @property
    def captured(self) -> bool:
        return self.loop.captured

    def prepare(self, model: ScoreModel, batches: list[list[int]]) -> str:
        """Capture at every batch size of `batches`, counting each size's eager call and
        checking the captured one against it (module docstring); returns the mode."""
        self.model = model
        if not batches:  # this process has no share of the samples
            return self.loop.mode
        first = {len(indices): indices for indices in reversed(batches)}
        end = 1 + max(i for indices in batches for i in indices)
        for size, indices in sorted(first.items()):
            other = [end + i for i in indices]  # samples of the same shape, not the first
            network, evaluations = CountedModel(model), NFECounter()
            eager = self.draw(other, network, evaluations)
            self.counts[size] = (network.nfe, evaluations)
            if self.loop.captured:
                self._check(indices, other, eager)
        return self.loop.mode

    def _check(self, indices: list[int], other: list[int], eager: Tensor) -> None:
        try:
            self.draw(indices, self.model, None, sampler=self.loop)  # compiles
            captured = self.draw(other, self.model, None, sampler=self.loop)
        except Exception as err:  # dynamo's refusals, a backend's, a kernel's
            self.loop.refuse(f"not capturable: {_why(err)}")
            return
        size = eager.flatten(1).norm(dim=1).clamp_min(torch.finfo(eager.dtype).tiny)
        error = ((captured - eager).flatten(1).norm(dim=1) / size).double()
        quantile = float(torch.quantile(error, CHECKED_SHARE))
        bound = CAPTURE_RTOL.get(eager.dtype, CAPTURE_RTOL[torch.float32])
        if not quantile <= bound:
            self.loop.refuse(f"captured samples differ from eager ones: "
                             f"{CHECKED_SHARE:.0%} within {quantile:.2g} relative, above "
                             f"{bound:g}, at batch size {len(indices)}")

    def __call__(self, indices: list[int], network: CountedModel,
                 evaluations: NFECounter) -> Tensor:
        if not self.loop.captured:
            return self.draw(indices, network, evaluations)
        with torch.compiler.set_stance("fail_on_recompile"):  # all compiled at warm-up
            x = self.draw(indices, self.model, None, sampler=self.loop)
        once, evaluated = self.counts[len(indices)]
        _add(network.nfe, once)
        if evaluations is not network.nfe:
            _add(evaluations, evaluated)
        return x


def _add(counter: NFECounter, counted: NFECounter) -> None:
    counter.calls += counted.calls
    counter.rows += counted.rows
