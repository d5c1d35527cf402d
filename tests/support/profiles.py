"""A small valid cluster profile that the cluster-file tests change one field at a time."""

import textwrap

GOOD = textwrap.dedent(
    """\
    name: lab
    pool_label: example.com/pool
    node_pools:
      - name: cpu
        cpu: "4"
        memory: 16Gi
        labels: {example.com/pool: cpu}
      - name: gpu
        gpu: {model: l4, count: 2}
        price: {on_demand: 1.5}
        labels: {example.com/pool: gpu}
    """
)
