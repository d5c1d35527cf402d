#!/usr/bin/env bash
# An MLOps engineer: check placement and cost on a custom EKS cluster, lint, then compile for KFP and Kubernetes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/eks}
mkdir -p "$out"
xpuflow plan train_gpu_export_npu --cluster examples/eks-team-cluster.yaml
xpuflow lint train_gpu_export_npu --cluster examples/eks-team-cluster.yaml
xpuflow compile train_gpu_export_npu --backend kfp --cluster examples/eks-team-cluster.yaml -o "$out/pipeline.yaml"
xpuflow compile train_gpu_export_npu --backend k8s --cluster examples/eks-team-cluster.yaml -o "$out/jobs.yaml" \
  --artifact-root s3://my-team-artifacts/digits/run-1
xpuflow graph train_gpu_export_npu --cluster examples/eks-team-cluster.yaml -o "$out/graph.svg"
