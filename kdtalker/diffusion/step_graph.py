"""The denoiser's call of one sampling step, recorded once and replayed: on CUDA, one graph launch per step.

Sampling one utterance runs the network at batch 1 (66 tokens): its ~215 kernels are tiny, so a GPU step costs the
launches, not the arithmetic (7.1 ms per step on an H200, README "Speed"). A CUDA graph (torch.cuda.CUDAGraph; the
PyTorch notes "CUDA Graphs") records the kernels of one call, with its inputs and output at fixed addresses, and
replays them with one launch. Each step copies its inputs into the recorded ones (the window's constants only when
they changed), replays, and copies the output out before the next replay overwrites it. The weights are read where
they were at recording time, so a model whose parameters moved (`.to()`, a new state assigned) is recorded again.

Threads: the pipeline samples in a new thread per run and the demo for several sessions at once, each in a thread of
its own, all on one model. They share its graphs (recorded once per process, not per run), one call at a time, and
on CUDA each call's stream first waits for the previous call's copy out; one recording at a time runs in the
process (PyTorch allows one capture underway per process).

The recorder is a parameter: `record_cuda_graph` on a GPU; tests on the CPU pass one that replays by calling the
function again on the recorded inputs, which has the same aliasing (inputs and output at fixed tensors).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kdtalker.errors import KDTalkerError

Replay = Callable[[], None]
Recorder = Callable[[Callable[..., torch.Tensor], Sequence[torch.Tensor]], tuple[Replay, torch.Tensor]]
WARMUP_CALLS = 2  # before recording: cuBLAS handles, workspaces and lazy module loads are made outside the graph
_RECORDING = threading.Lock()  # one capture underway per process
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its StepGraph


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


@dataclass
class Recorded:
    """One recorded call: its inputs and output at fixed tensors, and the tensor last copied into each input."""

    inputs: list[torch.Tensor | None]
    copied: list[torch.Tensor | None]
    replay: Replay
    output: torch.Tensor


class StepGraph:
    """fn(*inputs) -> output, recorded once per input signature (shapes, dtypes, devices) and `weights` (the
    weights' addresses, set by the caller) and replayed; None inputs are passed through as None. The output is a
    fresh tensor (copied out of the graph).

    Shared by every thread that samples with the model: one call at a time (a lock), and on CUDA each call's stream
    waits for the previous call's last kernel (an event), so two streams never write the recorded inputs at once.
    """

    MAX_GRAPHS = 4  # signatures kept (guided and unguided runs side by side would otherwise record in turn)

    def __init__(self, fn: Callable[..., torch.Tensor], recorder: Recorder):
        self.fn, self.recorder = fn, recorder
        self.weights: tuple = ()
        self.graphs: OrderedDict[tuple, Recorded] = OrderedDict()
        self.lock = threading.Lock()
        self.done: torch.cuda.Event | None = None  # recorded after the last call's copy out (CUDA)
        self.recordings = 0  # how often a graph was recorded (a new shape or moved weights)

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        key = (tuple(None if x is None else (x.shape, x.dtype, x.device) for x in inputs), self.weights)
        with self.lock:
            # Recorded and replayed in inference mode whatever the caller's mode (the pipeline samples in inference
            # mode, a live session under no_grad): the recorded tensors are inference tensors either way, and only
            # in inference mode may they be written.
            with torch.inference_mode():
                recorded = self.graphs.get(key) or self._record(inputs, key)
                self.graphs.move_to_end(key)
                stream = torch.cuda.current_stream(recorded.output.device) if recorded.output.is_cuda else None
                if stream is not None and self.done is not None:
                    stream.wait_event(self.done)  # the previous call, maybe on another stream, has copied its output
                for i, (static, x) in enumerate(zip(recorded.inputs, inputs)):
                    # the window's cond, ref and ori are the same tensors over its steps (the sampler never writes
                    # into them): copied once per window, not per step
                    if x is not None and x is not recorded.copied[i]:
                        static.copy_(x)
                        recorded.copied[i] = x
                recorded.replay()
            output = recorded.output.clone()  # outside inference mode: a normal tensor for a caller under no_grad
            if stream is not None:
                self.done = torch.cuda.Event()
                self.done.record(stream)
        return output

    def _record(self, inputs: Sequence[torch.Tensor | None], key: tuple) -> Recorded:
        if len(self.graphs) >= self.MAX_GRAPHS:
            _, oldest = self.graphs.popitem(last=False)
            if oldest.output.is_cuda:
                torch.cuda.synchronize(oldest.output.device)  # no replay of it in flight when its memory is freed
            del oldest
        static = [None if x is None else x.clone() for x in inputs]
        present = [x for x in static if x is not None]
        positions = [i for i, x in enumerate(static) if x is not None]

        def call(*tensors: torch.Tensor) -> torch.Tensor:
            args: list[torch.Tensor | None] = [None] * len(static)
            for i, x in zip(positions, tensors):
                args[i] = x
            return self.fn(*args)

        with _RECORDING:
            try:
                replay, output = self.recorder(call, present)
            except RuntimeError as error:
                # a failed capture leaves CUDA's allocator in capture mode: going on eagerly would leak or assert
                raise KDTalkerError(
                    f"recording the denoiser's CUDA graph failed ({error}); run with cuda_graphs=false"
                ) from error
        self.recordings += 1
        self.graphs[key] = Recorded(static, list(inputs), replay, output)
        return self.graphs[key]


def denoiser_step(model: torch.nn.Module, recorder: Recorder | None = None) -> Callable[..., torch.Tensor]:
    """The network call of a sampling step: (x (B, N, 70), ref (B, 70), ori (B, 70) or None, cond, time) -> eps
    (B, N, 70). Replayed from the model's graph when the model asks for it (`model.cuda_graphs` on a CUDA model, or
    a `recorder` given), else the eager call."""
    if recorder is None:
        if not (getattr(model, "cuda_graphs", False) and model.device.type == "cuda"):
            return _network(model)
        recorder = record_cuda_graph
    with _RECORDING:  # two threads starting at once make one StepGraph
        graph = _GRAPHS.get(model)
        if graph is None or graph.recorder is not recorder:
            # the graph holds its model weakly: a model's graphs go with it (a value that held it would keep it)
            graph = _GRAPHS[model] = StepGraph(_network(weakref.proxy(model)), recorder)
    graph.weights = tuple(p.data_ptr() for p in model.parameters())  # once per window, not per step
    return graph


def _network(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    """The eager network call of a step on (x, ref, ori, cond, time)."""

    def eager(x, ref, ori, cond, time):
        return model(x, None, None, ref, ori, cond=cond, time=time)

    return eager


def step_graph_of(model: torch.nn.Module) -> StepGraph | None:
    """The recorded steps of `model`, if it has any (for tests and benchmarks)."""
    return _GRAPHS.get(model)
