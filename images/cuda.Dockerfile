# xpuflow CUDA image: the train step on NVIDIA GPUs (and DDP under torchrun).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/* && useradd --uid 10001 --create-home xpuflow \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/xpuflow
COPY pyproject.toml README.md ./
COPY xpuflow ./xpuflow
COPY .ci/constraints/main.txt /tmp/constraints.txt
# torch 2.13.0 from PyPI is the CUDA build on x86_64; the constraints pin everything else
RUN pip install --no-cache-dir "torch==2.13.0" && pip install --no-cache-dir -c /tmp/constraints.txt ".[train,rag]"
USER 10001
ENTRYPOINT ["xpuflow"]
