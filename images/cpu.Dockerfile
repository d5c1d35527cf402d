# xpuflow CPU image: preprocess, evaluate, export (and NPU validation through ONNX Runtime).
FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --create-home xpuflow
WORKDIR /opt/xpuflow
COPY pyproject.toml README.md ./
COPY xpuflow ./xpuflow
COPY .ci/constraints/main.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple "torch==2.13.0" \
 && pip install --no-cache-dir -c /tmp/constraints.txt ".[train,export,rag,pgvector]"
USER 10001
ENTRYPOINT ["xpuflow"]
