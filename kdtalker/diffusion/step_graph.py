"""The denoiser's call of one sampling step, recorded once and replayed: on CUDA, one graph launch per step.

Sampling one utterance runs the network at batch 1 (66 tokens): its ~250 kernels are tiny, so a GPU step costs the
launches, not the arithmetic (7.1 ms per step on an H200, README "Speed"). A CUDA graph (torch.cuda.CUDAGraph; the
PyTorch notes "CUDA Graphs") records the kernels of one call, with its inputs and output at fixed addresses, and
replays them with one launch. Each step copies its inputs into the recorded ones, replays, and copies the output
out before the next replay overwrites it. The weights are read where they were at recording time, so a model whose
parameters moved (`.to()`, a new state assigned) is recorded again.

The recorder is a parameter: `record_cuda_graph` on a GPU; tests on the CPU pass one that replays by calling the
function again on the recorded inputs, which has the same aliasing (inputs and output at fixed tensors).
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

Replay = Callable[[], None]
Recorder = Callable[[Callable[..., torch.Tensor], Sequence[torch.Tensor]], tuple[Replay, torch.Tensor]]
WARMUP_CALLS = 2  # before recording: cuBLAS handles, workspaces and lazy module loads are made outside the graph


def record_cuda_graph(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> tuple[Replay, torch.Tensor]:
    """Record fn(*inputs) as a CUDA graph -> (replay, the output tensor every replay writes)."""
    device = inputs[0].device
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn(*inputs)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the renderer keeps launching work from its own thread while the sampler's thread records
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = fn(*inputs)
    return graph.replay, output


class StepGraph:
    """fn(*inputs) -> output, recorded once per input signature (shapes, dtypes, devices) and `weights` (the
    weights' addresses, set by the caller) and replayed; None inputs are passed through as None. The output is a
    fresh tensor (copied out of the graph)."""

    def __init__(self, fn: Callable[..., torch.Tensor], recorder: Recorder):
        self.fn, self.recorder = fn, recorder
        self.weights: tuple = ()
        self.key: tuple | None = None
        self.inputs: list[torch.Tensor | None] = []
        self.replay: Replay | None = None
        self.output: torch.Tensor | None = None
        self.recordings = 0  # how often a graph was recorded (a new shape or moved weights)

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        key = (tuple(None if x is None else (x.shape, x.dtype, x.device) for x in inputs), self.weights)
        # Recorded and replayed in inference mode whatever the caller's mode (the pipeline samples in inference
        # mode, a live session under no_grad): the recorded tensors are inference tensors either way, and only in
        # inference mode may they be written.
        with torch.inference_mode():
            if key != self.key:
                self._record(inputs, key)
            for static, x in zip(self.inputs, inputs):
                if x is not None:
                    static.copy_(x)
            self.replay()
        return self.output.clone()  # outside inference mode: a normal tensor for a caller under no_grad

    def _record(self, inputs: Sequence[torch.Tensor | None], key: tuple) -> None:
        self.key = self.replay = self.output = None  # free the old graph's memory first
        self.inputs = [None if x is None else x.clone() for x in inputs]
        present = [x for x in self.inputs if x is not None]
        positions = [i for i, x in enumerate(self.inputs) if x is not None]

        def call(*tensors: torch.Tensor) -> torch.Tensor:
            args: list[torch.Tensor | None] = [None] * len(self.inputs)
            for i, x in zip(positions, tensors):
                args[i] = x
            return self.fn(*args)

        self.replay, self.output = self.recorder(call, present)
        self.key = key
        self.recordings += 1


def denoiser_step(model: torch.nn.Module, recorder: Recorder | None = None) -> Callable[..., torch.Tensor]:
    """The network call of a sampling step: (x (B, N, 70), ref (B, 70), ori (B, 70) or None, cond, time) -> eps
    (B, N, 70). Replayed from a graph when the model asks for it (`model.cuda_graphs` on a CUDA model, or a
    `recorder` given), else the eager call. A graph that cannot be recorded is reported once, and the model then
    samples eagerly."""

    def eager(x, ref, ori, cond, time):
        return model(x, None, None, ref, ori, cond=cond, time=time)

    if recorder is None:
        if not (getattr(model, "cuda_graphs", False) and model.device.type == "cuda"):
            return eager
        recorder = record_cuda_graph
    graph = model.__dict__.get("_step_graph")
    if graph is None or graph.recorder is not recorder:
        graph = StepGraph(eager, recorder)
        model.__dict__["_step_graph"] = graph
    graph.weights = tuple(p.data_ptr() for p in model.parameters())  # once per window, not per step

    failed = False

    def replayed(x, ref, ori, cond, time):
        nonlocal failed
        if failed:
            return eager(x, ref, ori, cond, time)
        try:
            return graph(x, ref, ori, cond, time)
        except RuntimeError as error:  # a driver or PyTorch that cannot record this: sample as before, and say so
            if graph.key is not None:  # recorded, and a replay failed: not a recording problem
                raise
            failed, model.cuda_graphs = True, False
            warnings.warn(
                f"cuda_graphs: recording the denoiser failed ({error}); sampling without graphs", stacklevel=2
            )
            return eager(x, ref, ori, cond, time)

    return replayed
