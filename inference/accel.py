"""Faster UNet and VAE decode on CUDA with the same outputs: memory format, cuDNN autotuning,
attention kernel, ``torch.compile`` and CUDA graphs.

Everything works in place on the resident ``MuseTalkModels``: the heavy UNet blocks
(``down_blocks``, ``mid_block``, ``up_blocks``) and ``vae.decoder`` are compiled with
``nn.Module.compile`` or wrapped in ``GraphedModule``, so ``predict_latents`` and
``decode_latents`` run them unchanged. Options that need CUDA (channels_last, cudnn_benchmark,
cuda_graphs) are skipped with a log line on other devices: channels_last on the CPU runs
GroupNorm in a kernel that rounds far worse (see ``inference.vae._crops_to_pixels``).

``sdpa``: diffusers (0.42 here) already gives every ``Attention`` ``AttnProcessor2_0``
(``F.scaled_dot_product_attention``) when torch has it; the option sets it explicitly, which
matters only for models built with another processor.

Shapes: CUDA graphs replay only the shapes that ``warm`` captured (the fixed batch sizes); any
other shape runs eagerly. ``torch.compile`` compiles a new shape on first use, so ``warm`` every
batch size a stream can ask for before the first stream. Graph replays are serialised by one
lock per ``apply_accel`` call and their outputs are copied out, so concurrent streams sharing
the models stay correct. ``compile`` modes that use CUDA graphs themselves ("reduce-overhead",
"max-autotune") overwrite a compiled region's outputs on its next run, so they suit one caller
at a time (the benchmark); concurrent streams should use ``cuda_graphs`` instead.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from inference.models import MuseTalkModels, predict_latents
from inference.vae import LATENT_SIZE, decode_latents

logger = logging.getLogger(__name__)

COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Modes in which inductor records CUDA graphs itself: manual graphs on top are skipped.
CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")
AUDIO_SHAPE = (50, 384)  # audio tokens per frame (spec §5.4)


@dataclass(frozen=True)
class AccelOptions:
    """What ``apply_accel`` changes; the defaults change nothing."""

    channels_last: bool = False
    cudnn_benchmark: bool = False
    sdpa: bool = False
    compile: str = ""
    cuda_graphs: bool = False
    # The VAE decoder alone (most of the work): one compile for every batch size above 1
    # (the batch dimension turns dynamic on the second size), so warming stays bounded.
    compile_vae: str = ""

    def __post_init__(self) -> None:
        for name in ("compile", "compile_vae"):
            if getattr(self, name) not in COMPILE_MODES:
                raise ValueError(
                    f"unknown {name} mode {getattr(self, name)!r}; expected one of {COMPILE_MODES}"
                )

    def label(self) -> str:
        """A short name such as ``channels_last+compile=default`` (``baseline`` for none)."""
        parts = [
            name for name in ("channels_last", "cudnn_benchmark", "sdpa") if getattr(self, name)
        ]
        if self.compile:
            parts.append(f"compile={self.compile}")
        if self.compile_vae:
            parts.append(f"compile_vae={self.compile_vae}")
        if self.cuda_graphs:
            parts.append("cuda_graphs")
        return "+".join(parts) or "baseline"


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[Any]  # static input tensors (and the non-tensor leaves, unused on replay)
    outputs: list[Any]
    out_spec: TreeSpec


@dataclass
class GraphShared:
    """What every ``GraphedModule`` of one model set shares: a replay lock and a memory pool.

    The pool is shared because each replay's outputs are copied out under the lock before any
    other graph runs, so no graph ever reads memory another graph has since written.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    pool: Any = None
    capture: bool = False  # set by ``warm``: only then are new shapes captured


class GraphedModule(torch.nn.Module):
    """Runs ``module`` by replaying a CUDA graph captured per input signature (shapes, dtypes,
    strides and non-tensor arguments). Unknown signatures run eagerly unless ``shared.capture``.

    Attribute reads fall through to ``module`` (``has_cross_attention``, ``resnets``), so code
    that inspects a block keeps working. State-dict keys gain a ``module.`` infix.
    """

    def __init__(self, module: torch.nn.Module, shared: GraphShared) -> None:
        super().__init__()
        self.module = module
        self.shared = shared
        self.graphs: dict[tuple[Any, ...], _Captured] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "module" not in modules:
                raise
            return getattr(modules["module"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = tree_flatten((args, kwargs))
        key = _signature(leaves, spec)
        captured = self.graphs.get(key)
        if captured is None:
            if not self.shared.capture:
                return self.module(*args, **kwargs)
            captured = self._capture(leaves, spec)
            self.graphs[key] = captured
        with self.shared.lock:
            for static, leaf in zip(captured.inputs, leaves, strict=True):
                if isinstance(static, torch.Tensor):
                    static.copy_(leaf)
            captured.graph.replay()
            outputs = [o.clone() if isinstance(o, torch.Tensor) else o for o in captured.outputs]
        return tree_unflatten(outputs, captured.out_spec)

    def _capture(self, leaves: list[Any], spec: TreeSpec) -> _Captured:
        """Two warm-up runs on a side stream (cuDNN autotuning, lazy init), then the capture."""
        inputs = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        args, kwargs = tree_unflatten(inputs, spec)
        with self.shared.lock:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.module(*args, **kwargs)
            torch.cuda.current_stream().wait_stream(side)
            if self.shared.pool is None:
                self.shared.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.shared.pool):
                result = self.module(*args, **kwargs)
        outputs, out_spec = tree_flatten(result)
        return _Captured(graph, inputs, outputs, out_spec)


def _signature(leaves: list[Any], spec: TreeSpec) -> tuple[Any, ...]:
    parts: list[Any] = [repr(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), leaf.dtype, leaf.device, leaf.stride()))
        else:
            parts.append(repr(leaf))
    return tuple(parts)


def heavy_modules(models: MuseTalkModels) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """``(parent, name, module)`` for each part ``apply_accel`` compiles or graphs: the UNet's
    down, mid and up blocks and the VAE decoder (the cheap input/output convs stay eager)."""
    unet = models.unet
    found: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for blocks in (unet.down_blocks, unet.up_blocks):
        for index, block in enumerate(blocks):
            found.append((blocks, str(index), block))
    if unet.mid_block is not None:
        found.append((unet, "mid_block", unet.mid_block))
    found.append((models.vae, "decoder", models.vae.decoder))
    return found


def apply_accel(models: MuseTalkModels, options: AccelOptions) -> MuseTalkModels:
    """Apply ``options`` to ``models`` in place and return it; call ``warm`` next."""
    cuda = models.device.type == "cuda"
    if options.sdpa:
        models.unet.set_attn_processor(AttnProcessor2_0())
        models.vae.set_attn_processor(AttnProcessor2_0())
    if options.channels_last and _on_cuda(cuda, "channels_last"):
        _channels_last(models)
    if options.cudnn_benchmark and _on_cuda(cuda, "cudnn_benchmark"):
        # Process-wide: each conv shape is autotuned on its first run (``warm`` does that).
        torch.backends.cudnn.benchmark = True
    if options.compile:
        for _, _, module in heavy_modules(models):
            module.compile(mode=None if options.compile == "default" else options.compile)
    if options.compile_vae and options.compile:
        logger.info("compile_vae skipped: compile=%s covers the VAE decoder", options.compile)
    elif options.compile_vae:
        mode = options.compile_vae
        models.vae.decoder.compile(mode=None if mode == "default" else mode)
    if options.cuda_graphs and (
        options.compile in CUDAGRAPH_COMPILE_MODES or options.compile_vae in CUDAGRAPH_COMPILE_MODES
    ):
        logger.info("cuda_graphs skipped: compile mode %r records CUDA graphs", options.compile)
    elif options.cuda_graphs and _on_cuda(cuda, "cuda_graphs"):
        _wrap_graphs(models)
    logger.info("accel options applied on %s: %s", models.device, options.label())
    return models


def _on_cuda(cuda: bool, name: str) -> bool:
    if not cuda:
        logger.info("accel option %s skipped: it applies to CUDA devices only", name)
    return cuda


def _channels_last(models: MuseTalkModels) -> None:
    # Convolution weights in NHWC make cuDNN run NHWC kernels; activations follow the weights.
    for module in (models.unet, models.vae):
        module.to(memory_format=torch.channels_last)  # type: ignore[call-arg]


def _wrap_graphs(models: MuseTalkModels) -> None:
    shared = GraphShared()
    for parent, name, module in heavy_modules(models):
        setattr(parent, name, GraphedModule(module, shared))


def graphed_modules(models: MuseTalkModels) -> list[GraphedModule]:
    return [m for _, _, m in heavy_modules(models) if isinstance(m, GraphedModule)]


def warm(
    models: MuseTalkModels,
    batch_sizes: list[int],
    decode_batch_sizes: list[int] | None = None,
) -> None:
    """Run the UNet at each of ``batch_sizes`` and the VAE decoder at each of
    ``decode_batch_sizes`` (default: the same) once, so that cuDNN autotuning, compilation and
    CUDA-graph capture happen now rather than in the first stream."""
    graphed = graphed_modules(models)
    for module in graphed:
        module.shared.capture = True
    try:
        for size in batch_sizes:
            latents = torch.zeros(size, 8, LATENT_SIZE, LATENT_SIZE, device=models.device)
            predict_latents(models, latents, torch.zeros(size, *AUDIO_SHAPE))
        for size in decode_batch_sizes if decode_batch_sizes is not None else batch_sizes:
            decode_latents(models.vae, torch.zeros(size, 4, LATENT_SIZE, LATENT_SIZE))
    finally:
        for module in graphed:
            module.shared.capture = False
    if models.device.type == "cuda":
        torch.cuda.synchronize(models.device)
    captured = sum(len(module.graphs) for module in graphed)
    logger.info("accel warm-up done: batches %s, %d CUDA graphs", batch_sizes, captured)


def parse_options(text: str) -> AccelOptions:
    """``AccelOptions`` from a comma list such as ``"channels_last,cudnn_benchmark,cuda_graphs"``
    or ``"compile=default"`` (the ``MUSETALK_ACCEL`` setting); empty: none."""
    flags: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        if name in ("compile", "compile_vae"):
            flags[name] = value or "default"
        elif name in ("channels_last", "cudnn_benchmark", "sdpa", "cuda_graphs") and not value:
            flags[name] = True
        else:
            raise ValueError(
                f"unknown accel option {item!r}; expected channels_last, cudnn_benchmark, "
                "sdpa, cuda_graphs, compile=<mode> or compile_vae=<mode>"
            )
    return AccelOptions(**flags)


# What ``MUSETALK_ACCEL=auto`` (the default) applies, by device type. On CUDA: graphs of the UNet
# blocks and the VAE decoder, the most real-time streams on an H200 (bench/results/
# streams-random-full-cuda.md): a model thread that launches one graph per block keeps the GPU
# busy while encoder threads hold the interpreter; outputs are bit-identical
# (models-cuda.md). On a CPU: nothing (the CUDA-only options do not apply there).
AUTO_OPTIONS = {"cuda": "cuda_graphs"}


def options_for(text: str, device_type: str) -> AccelOptions:
    """The ``MUSETALK_ACCEL`` setting on a device: ``auto`` picks :data:`AUTO_OPTIONS` for
    ``device_type``; ``none`` or empty applies nothing; anything else is
    :func:`parse_options`'s comma list."""
    value = text.strip()
    if value == "auto":
        return parse_options(AUTO_OPTIONS.get(device_type, ""))
    return parse_options("" if value == "none" else value)


def warm_sizes(max_batch: int) -> list[int]:
    """The batch sizes warmed (and padded to) for ``max_batch``: powers of two below it, and
    it. A batch of another size runs at the next of these, so every call replays a graph."""
    sizes = {max_batch}
    size = 1
    while size < max_batch:
        sizes.add(size)
        size *= 2
    return sorted(sizes)
