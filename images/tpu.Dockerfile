# xpuflow TPU image: the train_tpu step on Cloud TPU VMs (torch_xla 2.9 needs torch 2.9 exactly).
FROM python:3.11.7-slim-bookworm
RUN useradd --uid 10001 --create-home xpuflow
WORKDIR /opt/xpuflow
COPY pyproject.toml README.md ./
COPY xpuflow ./xpuflow
COPY .ci/constraints/xla.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[tpu]" "torch_xla[tpu]==2.9.0"
ENV PJRT_DEVICE=TPU
USER 10001
ENTRYPOINT ["xpuflow"]
