"""The denoiser's call of one sampling step, recorded once and replayed: on CUDA, one graph launch per step.

Sampling one utterance runs the network at batch 1 (66 tokens): its ~215 kernels are tiny, so a GPU step costs the
launches, not the arithmetic (7.1 ms per step on an H200, README "Speed"). A CUDA graph (torch.cuda.CUDAGraph; the
PyTorch notes "CUDA Graphs") records the kernels of one call, with its inputs and output at fixed addresses, and
replays them with one launch. Each step copies its inputs into the recorded ones (the window's constants only when
they changed), replays, and copies the output out before the next replay overwrites it. The weights are read where
they were at recording time, so a model whose parameters moved (`.to()`, a new state assigned) is recorded again.

Threads: each sampling thread has its own graphs (the demo samples for several sessions at once, each in a thread
of its own; one graph shared by two would mix their inputs), and one recording at a time runs in the process
(PyTorch allows one capture underway per process).

The recorder is a parameter: `record_cuda_graph` on a GPU; tests on the CPU pass one that replays by calling the
function again on the recorded inputs, which has the same aliasing (inputs and output at fixed tensors).
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Sequence

import torch

from kdtalker.errors import KDTalkerError

Replay = Callable[[], None]
Recorder = Callable[[Callable[..., torch.Tensor], Sequence[torch.Tensor]], tuple[Replay, torch.Tensor]]
WARMUP_CALLS = 2  # before recording: cuBLAS handles, workspaces and lazy module loads are made outside the graph
_RECORDING = threading.Lock()  # one capture underway per process
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> threading.local holding its `graph`


def record_cuda_graph(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> tuple[Replay, torch.Tensor]:
    """Record fn(*inputs) as a CUDA graph -> (replay, the output tensor every replay writes)."""
    device = inputs[0].device
    caller = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(caller)
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn(*inputs)
    caller.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        # thread_local: the renderer keeps launching work from its own thread while the sampler's thread records
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = fn(*inputs)
    finally:
        torch.cuda.set_stream(caller)  # a capture that fails leaves the thread on the capture stream
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
        self.copied: list[torch.Tensor | None] = []  # the tensor last copied into each input
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
            for i, (static, x) in enumerate(zip(self.inputs, inputs)):
                # the window's cond, ref and ori are the same tensors over its steps (the sampler never writes
                # into them): copied once per window, not per step
                if x is not None and x is not self.copied[i]:
                    static.copy_(x)
                    self.copied[i] = x
            self.replay()
        return self.output.clone()  # outside inference mode: a normal tensor for a caller under no_grad

    def _record(self, inputs: Sequence[torch.Tensor | None], key: tuple) -> None:
        self.key = self.replay = self.output = None  # free the old graph's memory first
        self.inputs = [None if x is None else x.clone() for x in inputs]
        self.copied = list(inputs)
        present = [x for x in self.inputs if x is not None]
        positions = [i for i, x in enumerate(self.inputs) if x is not None]

        def call(*tensors: torch.Tensor) -> torch.Tensor:
            args: list[torch.Tensor | None] = [None] * len(self.inputs)
            for i, x in zip(positions, tensors):
                args[i] = x
            return self.fn(*args)

        with _RECORDING:
            try:
                self.replay, self.output = self.recorder(call, present)
            except RuntimeError as error:
                # a failed capture leaves CUDA's allocator in capture mode: going on eagerly would leak or assert
                raise KDTalkerError(
                    f"recording the denoiser's CUDA graph failed ({error}); run with cuda_graphs=false"
                ) from error
        self.key = key
        self.recordings += 1


def denoiser_step(model: torch.nn.Module, recorder: Recorder | None = None) -> Callable[..., torch.Tensor]:
    """The network call of a sampling step: (x (B, N, 70), ref (B, 70), ori (B, 70) or None, cond, time) -> eps
    (B, N, 70). Replayed from this thread's graph when the model asks for it (`model.cuda_graphs` on a CUDA model, or
    a `recorder` given), else the eager call."""

    def eager(x, ref, ori, cond, time):
        return model(x, None, None, ref, ori, cond=cond, time=time)

    if recorder is None:
        if not (getattr(model, "cuda_graphs", False) and model.device.type == "cuda"):
            return eager
        recorder = record_cuda_graph
    per_thread = _GRAPHS.setdefault(model, threading.local())  # a thread's graph ends with the thread
    graph = getattr(per_thread, "graph", None)
    if graph is None or graph.recorder is not recorder:
        graph = per_thread.graph = StepGraph(eager, recorder)
    graph.weights = tuple(p.data_ptr() for p in model.parameters())  # once per window, not per step
    return graph


def thread_graph(model: torch.nn.Module) -> StepGraph | None:
    """This thread's recorded step of `model`, if it has one (for tests and benchmarks)."""
    per_thread = _GRAPHS.get(model)
    return None if per_thread is None else getattr(per_thread, "graph", None)
