"""KFP v2 components, one per xpuflow step; each runs the step function on KFP artifacts.

No ``from __future__ import annotations`` here: KFP reads the real annotations.
Imports of the step code happen inside the component bodies (they run in the pod).
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from ..images import image_for

CPU_IMAGE, CUDA_IMAGE, TPU_IMAGE = image_for("cpu"), image_for("gpu"), image_for("tpu")


@dsl.component(base_image=CPU_IMAGE)
def preprocess(data: Output[Dataset], input_uri: str = "builtin:digits", label: str = "label", seed: int = 0):
    """CPU: validate, split and standardise a labelled table into Parquet splits (a directory)."""
    from xpuflow.steps.preprocess import preprocess as step

    stats = step(input=input_uri, output=data.path, label=label, seed=seed)
    data.metadata.update({"rows": stats["rows"], "classes": stats["classes"], "features": len(stats["features"])})


@dsl.component(base_image=CUDA_IMAGE)
def train(data: Input[Dataset], model: Output[Model], metrics: Output[Metrics], curves: Output[HTML],
          epochs: int = 10, batch_size: int = 64, lr: float = 0.001, seed: int = 0, precision: str = "auto"):
    """GPU: PyTorch training (checkpointed, preemption-safe); the model directory holds model.pt."""
    import base64
    import os

    from xpuflow.steps.train import train as step

    result = step(data=data.path, output=model.path, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  precision=precision, checkpoint_dir=os.path.join(model.path, "checkpoints"))
    model.metadata.update({"framework": "pytorch", "device": result["device"], "precision": result["precision"]})
    for key in ("val_accuracy", "val_loss", "train_loss"):
        metrics.log_metric(key, result["final"][key])
    metrics.log_metric("samples_per_second", result["samples_per_second"] or 0.0)
    png = base64.b64encode(open(os.path.join(model.path, "curves.png"), "rb").read()).decode()
    with open(curves.path, "w") as f:
        f.write(f'<html><body><h3>training curves</h3><img src="data:image/png;base64,{png}"/></body></html>')


@dsl.component(base_image=TPU_IMAGE)
def train_tpu(data: Input[Dataset], model: Output[Model], metrics: Output[Metrics], curves: Output[HTML],
              epochs: int = 10, batch_size: int = 64, lr: float = 0.001, seed: int = 0):
    """TPU: the train loop on torch_xla (PJRT); same model file and checkpoints as train."""
    import base64
    import os

    from xpuflow.steps.train_tpu import train_tpu as step

    result = step(data=data.path, output=model.path, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  checkpoint_dir=os.path.join(model.path, "checkpoints"))
    model.metadata.update({"framework": "pytorch", "device": result["device"], "precision": result["precision"]})
    for key in ("val_accuracy", "val_loss", "train_loss"):
        metrics.log_metric(key, result["final"][key])
    png = base64.b64encode(open(os.path.join(model.path, "curves.png"), "rb").read()).decode()
    with open(curves.path, "w") as f:
        f.write(f'<html><body><h3>training curves</h3><img src="data:image/png;base64,{png}"/></body></html>')


@dsl.component(base_image=CPU_IMAGE)
def evaluate(model: Input[Model], data: Input[Dataset], metrics: Output[Metrics],
             confusion: Output[ClassificationMetrics], split: str = "test"):
    """CPU: accuracy and confusion matrix on the test split."""
    from xpuflow.steps.evaluate import evaluate as step

    result = step(model=model.path, data=data.path, output=metrics.path + ".d", split=split)
    metrics.log_metric("accuracy", result["accuracy"])
    metrics.log_metric("rows", result["rows"])
    confusion.log_confusion_matrix(result["classes"], result["confusion_matrix"])


@dsl.component(base_image=CPU_IMAGE)
def export(model: Input[Model], data: Input[Dataset], onnx: Output[Model], metrics: Output[Metrics],
           target: str = "qnn-htp"):
    """CPU: ONNX export, INT8 QDQ quantization with accuracy gates, target compile (QNN HTP context binary)."""
    from xpuflow.steps.export import export as step

    report = step(model=model.path, data=data.path, output=onnx.path, target=target)
    onnx.metadata.update({"target": report.get("target"), "format": "onnx"})
    for key, value in sorted(report.get("accuracy", {}).items()):
        if isinstance(value, (int, float)):
            metrics.log_metric(f"accuracy_{key}", value)


@dsl.component(base_image=CPU_IMAGE)
def validate_on_device(exported: Input[Model], data: Input[Dataset], metrics: Output[Metrics]):
    """NPU: run the exported INT8 model on the device's execution provider and compare with fp32."""
    from xpuflow.steps.validate import validate_on_device as step

    result = step(export=exported.path, data=data.path, output=metrics.path + ".d")
    for key in ("accuracy", "agreement_with_fp32"):
        metrics.log_metric(key, result[key])


@dsl.component(base_image=CPU_IMAGE)
def chunk(chunks: Output[Dataset], input_uri: str = "builtin:docs", unit: str = "words", size: int = 100,
          overlap: int = 20):
    """CPU: documents (text, Markdown, JSONL) -> chunks with stable ids and source offsets (chunks.parquet)."""
    from xpuflow.steps.rag.chunk import chunk as step

    result = step(input=input_uri, output=chunks.path, unit=unit, size=size, overlap=overlap)
    chunks.metadata.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})


@dsl.component(base_image=CUDA_IMAGE)
def embed(chunks: Input[Dataset], embeddings: Output[Dataset], batch_size: int = 64):
    """GPU (inference pool): normalised sentence embeddings, length-sorted batches, resumable by shard."""
    from xpuflow.steps.rag.embed import embed as step

    result = step(data=chunks.path, output=embeddings.path, batch_size=batch_size)
    embeddings.metadata.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})


@dsl.component(base_image=CPU_IMAGE)
def index(embeddings: Input[Dataset], faiss_index: Output[Artifact], metrics: Output[Metrics],
          min_recall: float = 0.9, engine: str = "faiss", table: str = "xpuflow_chunks"):
    """CPU: a vector index of the embeddings, with recall@5 on queries drawn from the corpus (gated).

    engine "faiss": an index file in faiss_index; "pgvector": the table ``table`` of the PostgreSQL server whose
    connection string the task reads from XPUFLOW_PGVECTOR_DSN (mount it from a Secret), faiss_index/index.json
    naming it."""
    from xpuflow.steps.rag.index import index as step

    result = step(data=embeddings.path, output=faiss_index.path, min_recall=min_recall, engine=engine, table=table)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)


@dsl.component(base_image=CUDA_IMAGE)
def batch_infer(model: Input[Model], data: Input[Dataset], predictions: Output[Dataset], split: str = "test"):
    """GPU (inference pool): score a data set with a trained model; batch size fitted to the GPU memory."""
    from xpuflow.steps.rag.batch_infer import batch_infer as step

    result = step(model=model.path, data=data.path, output=predictions.path, split=split)
    predictions.metadata.update({k: v for k, v in result.items() if isinstance(v, (int, float, str))})
