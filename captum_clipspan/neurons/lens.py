"""The second-order lens (Gandelsman, Efros & Steinhardt, "Interpreting the Second-Order Effects
of Neurons in CLIP", ICLR 2025): every neuron of one MLP layer read as a sparse sum of texts.

The authors' procedure (``compute_second_order_neuron_prs.py``, ``compute_pcas.py``,
``compute_sparse_decomposition.py``) stores a ``[images, neurons, E]`` array (~32 GB for one
ViT-B-32 layer on ImageNet) and reads it back per neuron. :class:`NeuronLens` computes the same
quantities in two streamed passes over the images, holding only accumulators:

1. the dataset mean ``mu_n`` of each neuron's second-order effect ``phi_n`` (``[n, E]``, summed
   in float64);
2. for each neuron, the ``k`` images with the largest ``||phi_n - mu_n||`` together with those
   centered effects (a running top-k, :class:`~.topk.RunningTopK`), and the sums of
   ``||phi_n - mu_n||`` and of its square over all images.

The first principal component is then taken over each neuron's top-``k`` rows, as the authors do
(``np.linalg.svd`` of the top-``k`` centered effects, flipped unless more than ``k // 2`` rows
project positively). Keeping these rows bounds memory by ``[n, k, E]`` floats (629 MB for
ViT-B-32's 3,072 neurons, ``k = 100``, ``E = 512`` in fp32) whatever the number of images. The
alternatives are worse: a per-neuron second moment over all images is ``[n, E, E]`` (3.2 GB for
ViT-B-32, 25 GB for ViT-L-14's 4,096 neurons at ``E = 768``) and would give another component than
the authors'; power iteration would need one more pass over the images per iteration. Finally the
component is decomposed over the bank by orthogonal matching pursuit
(:func:`~.sparse.orthogonal_matching_pursuit`) after the authors' text preprocessing
(:func:`~.sparse.preprocess_bank`), 32 texts by default.

Both passes are resumable and shared out over the processes of torch.distributed
(:mod:`~.passes`, built from the decomposition cache's machinery).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..decomposition import CONVENTIONS, compute_dtype
from ..decomposition.neuron_maps import _resolve_neurons, neuron_effects
from ..hooked.clip import HookedCLIP, check_texts
from ..sources import ImageSource, as_dataset, dataset_length
from ..text import text_bank
from ..validation import check_choice, check_text_embeddings, resolve_layer
from .passes import PassFolder, State
from .principal import first_components, squared_norms, variance_along
from .report import NeuronReport
from .sparse import orthogonal_matching_pursuit, preprocess_bank, top_atoms
from .topk import RunningTopK

__all__ = ["NeuronLens"]


class NeuronLens:
    """The second-order lens for every neuron of one MLP layer (the paper's Sec. 4).

    Build it with a text bank, then :meth:`fit` it to images: a :class:`NeuronReport`.

    Args:
        clip: a :class:`~captum_clipspan.HookedCLIP`.
        layer: the MLP layer (negative counts from the end); a later attention layer must read
            it, so the last layer is refused.
        bank: the text bank: a bank name (``"general"``, ``"words"``, ``"toy"``), the path of a
            text file with one description per line, or a list of descriptions.
        text_embeddings: optional precomputed ``[T, E]`` embeddings of the bank.
        neurons: neuron indices to read (``None``: every neuron of the layer).
        top_k: images kept per neuron for the principal component (the authors' 100).
        n_components: texts per neuron in the sparse decomposition (the authors' 32).
        convention: the effects' convention, ``"reference"`` (the authors') or ``"centered"``.
        coefficient: the scale of the authors' text preprocessing (100).

    Raises:
        ValueError: for the last layer (no later attention), an MLP without exposed hidden units,
            neuron indices out of range or repeated, text embeddings of the wrong width or count,
            or ``n_components`` larger than the bank.

    Examples::

        >>> lens = cs.NeuronLens(clip, layer=9, bank="general")
        >>> report = lens.fit("images/", batch_size=32, work_dir="lens-9/")   # resumable
        >>> print(report.describe(report.strongest(1)[0]))
        >>> report.to_frame().to_csv("neurons.csv")
    """

    def __init__(self, clip: HookedCLIP, layer: int, bank: str | Path | Sequence[str] = "general",
                 text_embeddings: Tensor | None = None, *,
                 neurons: int | Sequence[int] | Tensor | None = None, top_k: int = 100,
                 n_components: int = 32, convention: str = "reference",
                 coefficient: float = 100.0) -> None:
        if not isinstance(clip, HookedCLIP):
            raise TypeError(f"expected a HookedCLIP, got {type(clip).__name__}.")
        vit = clip.visual
        self.clip, self.layer = clip, resolve_layer(layer, vit.n_layers)
        if self.layer == vit.n_layers - 1:
            raise ValueError(f"layer {self.layer} is the last layer: no attention layer reads its "
                             "MLP's output, so its neurons have no second-order effect "
                             f"(accepted: 0..{vit.n_layers - 2} or -{vit.n_layers}..-2).")
        mlp = vit.blocks[self.layer].mlp
        if not mlp.has_neurons:
            raise ValueError(f"MLP layer {self.layer} of this tower does not expose its hidden "
                             "units; the lens needs an fc-act-fc, SwiGLU or GLU MLP.")
        self.neurons = _resolve_neurons(neurons, mlp.d_mlp, self.layer)
        if len(set(self.neurons.tolist())) != len(self.neurons):
            raise ValueError("neurons has repeated indices; give each neuron once.")
        check_choice(convention, "convention", CONVENTIONS)
        self.texts = text_bank(bank) if isinstance(bank, (str, Path)) else check_texts(bank)
        if text_embeddings is not None:
            text_embeddings = check_text_embeddings(text_embeddings, clip.embed_dim)
            if text_embeddings.shape[0] != len(self.texts):
                raise ValueError(f"got {text_embeddings.shape[0]} text embeddings for "
                                 f"{len(self.texts)} texts; give one row per text of the bank.")
        for name, value in (("top_k", top_k), ("n_components", n_components)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if n_components > len(self.texts):
            raise ValueError(f"n_components={n_components} is larger than the bank "
                             f"({len(self.texts)} texts).")
        self._text_embeddings = text_embeddings
        self.top_k, self.n_components = top_k, n_components
        self.convention, self.coefficient = convention, float(coefficient)

    @property
    def text_embeddings(self) -> Tensor:
        """``[T, E]`` unit-norm embeddings of the bank (encoded on first use)."""
        if self._text_embeddings is None:
            self._text_embeddings = self.clip.encode_text(self.texts).float()
        return self._text_embeddings

    def effects(self, images: Tensor) -> Tensor:
        """``[B, n, E]`` the second-order effects of the lens's neurons on ``images``."""
        return neuron_effects(self.clip, images, self.layer, "second", neurons=self.neurons,
                              convention=self.convention).neurons

    def fit(self, source: ImageSource, *, batch_size: int = 32,
            work_dir: str | Path | None = None, overwrite: bool = False, num_workers: int = 0,
            show_progress: bool = True, checkpoint_seconds: float = 120.0) -> NeuronReport:
        """Read every neuron of the layer from a dataset, in two streamed passes.

        Under ``torch.distributed`` every process calls this with the same arguments and a
        ``work_dir`` on a shared local disk; the batches are shared out and every process returns
        the same report.

        Args:
            source: an image folder, a tensor ``[N, 3, H, W]``, a Dataset or a DataLoader in a
                fixed order.
            batch_size: images per forward pass (a DataLoader's own batches are used).
            work_dir: where the passes keep their states: an interrupted fit resumes there, and
                a folder of another model, settings or images is refused. Default: a temporary
                folder (not resumable).
            overwrite: start anew in ``work_dir``.
            num_workers: DataLoader workers for folders and Datasets.
            show_progress: tqdm progress bars.
            checkpoint_seconds: how often each process saves its state during a pass.

        Returns:
            A :class:`NeuronReport`.

        Raises:
            ValueError: an empty source, a ``work_dir`` holding another model's, settings' or
                images' pass or other files, no ``work_dir`` under torch.distributed, or images
                the model refuses.
        """
        if work_dir is None and dist.is_available() and dist.is_initialized() and (
                dist.get_world_size() > 1):
            raise ValueError("under torch.distributed every process must share one work_dir (a "
                             "folder on a local disk); pass work_dir=.")
        dataset = as_dataset(self.clip, source)
        n = dataset_length(dataset)
        if n == 0:
            raise ValueError("the image source is empty.")
        settings = {"layer": self.layer, "neurons": self.neurons.tolist(),
                    "convention": self.convention, "top_k": self.top_k}
        with tempfile.TemporaryDirectory() as scratch:
            folder = PassFolder(Path(work_dir) if work_dir is not None else Path(scratch) / "lens",
                                self.clip, dataset, n, settings, batch_size, overwrite,
                                num_workers, show_progress, checkpoint_seconds)
            with folder:
                means = folder.run("mean", self._fresh_means, self._add_means, _add_sums,
                                   f"neuron lens, layer {self.layer}: means")
                top = folder.run("top", self._fresh_top, self._top_updater(means, n),
                                 self._combine_top, f"neuron lens, layer {self.layer}: top images")
                files = [str(file) for file in folder.files]
        return self._report(means, top, n, files, folder.meta["fingerprint"])

    # The two passes' states -------------------------------------------------------------------

    @property
    def _shape(self) -> tuple[int, int, torch.dtype]:
        return len(self.neurons), self.clip.embed_dim, compute_dtype(self.clip.dtype)

    def _fresh_means(self) -> State:
        n, width, _ = self._shape
        return {"sum": torch.zeros(n, width, dtype=torch.float64),
                "norm_sum": torch.zeros(n, dtype=torch.float64)}

    def _add_means(self, state: State, rows: Tensor, images: Tensor) -> None:
        effects = self.effects(images)
        state["sum"] += effects.sum(0, dtype=torch.float64).cpu()
        state["norm_sum"] += _norms(effects).sum(0).cpu()

    def _fresh_top(self) -> State:
        n, width, dtype = self._shape
        top = RunningTopK.empty(n, self.top_k, width, dtype).state_dict()
        return {**top, "norm_sum": torch.zeros(n, dtype=torch.float64),
                "square_sum": torch.zeros(n, dtype=torch.float64)}

    def _top_updater(self, means: State, n: int) -> Any:
        mean = means["sum"] / n

        def update(state: State, rows: Tensor, images: Tensor) -> None:
            effects = self.effects(images)
            centered = (effects - mean.to(effects)).cpu()
            norms = _norms(centered)
            _top(state).update(norms, centered, rows)
            state["norm_sum"] += norms.sum(0)
            state["square_sum"] += norms.square().sum(0)
        return update

    @staticmethod
    def _combine_top(state: State, other: State) -> None:
        _top(state).merge(_top(other))
        _add_sums(state, other)

    # The report ------------------------------------------------------------------------------

    def _report(self, means: State, top: State, n: int, files: list[str],
                fingerprint: str) -> NeuronReport:
        topk = _top(top)
        counts = topk.counts
        component, component_variance = first_components(topk.vectors, counts)
        dictionary = preprocess_bank(self.text_embeddings.cpu(), self.coefficient)
        codes = orthogonal_matching_pursuit(component.double(), dictionary, self.n_components)
        indices, coefficients = top_atoms(codes, self.n_components)
        reconstruction = torch.nn.functional.normalize(codes @ dictionary, dim=-1)
        squares = squared_norms(topk.vectors)
        return NeuronReport(
            layer=self.layer, neurons=self.neurons.clone(),
            mean=(means["sum"] / n).float(), mean_norm=(means["norm_sum"] / n).float(),
            centered_norm=(top["norm_sum"] / n).float(), component=component.float(),
            component_variance=component_variance,
            text_indices=indices, text_coefficients=coefficients.float(),
            text_variance=variance_along(topk.vectors, reconstruction),
            text_cosine=(reconstruction * component.double()).sum(-1).float(),
            top_images=topk.indices, top_norms=topk.norms.float(),
            top_share=torch.where(top["square_sum"] > 0, squares / top["square_sum"].clamp_min(
                1e-300), 0.0).float(),
            texts=list(self.texts), count=n, convention=self.convention,
            fingerprint=fingerprint, model_name=self.clip.model_name, files=files)


def _norms(effects: Tensor) -> Tensor:
    """``[B, n]`` the effects' norms, accumulated in float64 without a float64 copy."""
    return torch.linalg.vector_norm(effects, dim=-1, dtype=torch.float64)


def _top(state: State) -> RunningTopK:
    return RunningTopK(state["norms"], state["indices"], state["vectors"])


def _add_sums(state: State, other: State) -> None:
    for key in ("sum", "norm_sum", "square_sum"):
        if key in state:
            state[key] += other[key]
