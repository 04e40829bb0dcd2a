"""A trial's features extracted while its batches are drawn, the samples then let go.

A held trial keeps every sample until the metrics run: FID-50k of 3x256x256 images is
39 GB per copy. A streamed one feeds each batch, as it comes, to `StreamedFeatures`,
which keeps per feature space (extractor, postprocess) only the rows not yet extracted
(fewer than one chunk) and the features (N_local x F float64: 50,000 x 2,048 x 8 bytes
is 800 MB for InceptionV3, where EDM's fid.py keeps only their moments).

The features are the very numbers held extraction gives, not merely close: extraction
there (`harness.metrics.trial_features`) runs the extractor on chunks of `CHUNK` rows of
this process's share in index order (`fid.extract`), and so does this, whatever the
batch size; `postprocess` acts row by row. The moments and the gathered matrix are then
made from the same (N_local, F) tensor by the same code (`SampleFeatures`), so FID, KID,
precision and recall agree to the last digit with a held run.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.model import ScoreModel
from .fid import extract
from .trial_features import SampleFeatures, postprocess

#: Rows per extractor call: `fid.extract`'s default batch, which held extraction uses.
CHUNK = 500


class _Space:
    """One feature space: rows waiting for a full chunk, and the features so far."""

    def __init__(self, extractor: nn.Module, how: str):
        self.extractor, self.how = extractor, how
        self.waiting: list[Tensor] = []
        self.count = 0
        self.features: list[Tensor] = []

    def add(self, rows: Tensor) -> None:
        self.waiting.append(rows)
        self.count += rows.shape[0]
        if self.count >= CHUNK:
            pending = self.waiting[0] if len(self.waiting) == 1 else torch.cat(self.waiting)
            whole = self.count - self.count % CHUNK
            self.features.append(extract(self.extractor, pending[:whole], CHUNK))
            rest = pending[whole:]
            self.waiting, self.count = ([rest] if rest.shape[0] else []), rest.shape[0]

    def finish(self) -> Tensor:
        if self.count:
            self.features.append(extract(self.extractor, torch.cat(self.waiting), CHUNK))
        self.waiting, self.count = [], 0
        return torch.cat(self.features)


class StreamedFeatures:
    """The features of this process's samples in each declared space, batch by batch.

    `add` takes this process's rows in its index order (its batches as drawn, decoded
    for a latent model); `finish` extracts the last rows and returns, per space keyed
    (extractor sha256, postprocess), the `SampleFeatures` a held trial would have made.
    """

    def __init__(self, spaces: list[tuple[nn.Module, str]], model: ScoreModel):
        self.model = model
        self.spaces: dict[tuple[str, str], _Space] = {}
        for extractor, how in spaces:
            self.spaces.setdefault((str(extractor.sha256), how), _Space(extractor, how))

    @property
    def widths(self) -> list[int]:
        """The number of features of each space whose extractor declares it
        (`num_features`; a plugin's extractor may not)."""
        return [int(space.extractor.num_features) for space in self.spaces.values()
                if getattr(space.extractor, "num_features", None) is not None]

    def add(self, rows: Tensor) -> None:
        """Feed this process's next rows (on the CPU, as a held trial keeps them)."""
        for space in self.spaces.values():
            space.add(postprocess(rows, self.model, space.how))

    def finish(self) -> dict[tuple[str, str], SampleFeatures]:
        """Every space's features, the last partial chunk extracted."""
        return {key: SampleFeatures(space.finish(), key[0])
                for key, space in self.spaces.items()}
