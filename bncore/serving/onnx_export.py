"""ONNX export of the served graph: raw inputs in (standardised inside), logits out, any batch size."""

import threading

import torch

from bncore.bn.folding import serving_graph
from bncore.training.trained_model import TrainedModel

INPUT_NAME = "inputs"
OUTPUT_NAME = "logits"

# While it traces, torch.export turns mkldnn, nnpack and cudnn off process-wide and restores them after:
# two overlapping exports could leave them off for good. (Predictions meanwhile take other kernels for
# those seconds: the same answers to float rounding.)
_export_lock = threading.Lock()


def to_onnx(model: TrainedModel) -> bytes:
    """The model with BN folded, as ONNX bytes; built from the training form, never from the graph that serves."""
    network = serving_graph(model, fold=True).network
    example = torch.zeros((2, *model.input_shape))  # a batch of 1 would let the exporter fix the batch size
    with _export_lock:
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    assert program is not None
    return program.model_proto.SerializeToString()


class OnnxExport:
    """A model's ONNX file, exported when first asked for and then kept: an export traces for seconds."""

    def __init__(self, model: TrainedModel) -> None:
        self._model = model
        self._onnx: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[bytes, bool]:
        """The ONNX bytes, and whether this call exported them."""
        with self._lock:
            if self._onnx is not None:
                return self._onnx, False
            self._onnx = to_onnx(self._model)
            return self._onnx, True
