"""Writes cases.json: inputs and deepseek-ai/EPLB's outputs of `eplb.rebalance_experts`.

Run from this folder with EPLB's eplb.py (commit d52c72d) importable:
    PYTHONPATH=/path/to/EPLB python make_cases.py
"""
import json
import random

import torch

import eplb

CASES = [
    # name, layers, experts, replicas, groups, nodes, gpus, largest load (small: many ties)
    ("random-hierarchical-64e", 3, 64, 80, 8, 4, 16, 1000),
    ("random-hierarchical-ties", 4, 64, 160, 8, 2, 4, 6),
    ("random-hierarchical-groups-per-node-1", 2, 32, 48, 4, 4, 8, 50),
    ("random-global-ties", 4, 48, 96, 5, 2, 4, 4),
    ("random-global-256e", 2, 256, 288, 8, 3, 6, 100000),
    ("random-one-gpu-per-node", 2, 16, 24, 4, 2, 2, 9),
    ("random-no-redundant", 2, 32, 32, 4, 2, 8, 20),
]


def run(name, weight, replicas, groups, nodes, gpus):
    phy2log, log2phy, logcnt = eplb.rebalance_experts(weight, replicas, groups, nodes, gpus)
    return {
        "name": name,
        "weight": weight.tolist(),
        "num_replicas": replicas,
        "num_groups": groups,
        "num_nodes": nodes,
        "num_gpus": gpus,
        "phy2log": phy2log.tolist(),
        "log2phy": log2phy.tolist(),
        "logcnt": logcnt.tolist(),
    }


def main():
    # The README's example, verbatim (hierarchical policy).
    readme = torch.tensor([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                           [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
    cases = [run("readme", readme, 16, 4, 2, 8)]
    # The same loads under the global policy (3 groups do not divide among 2 nodes).
    cases.append(run("readme-global", readme, 16, 3, 2, 8))
    rng = random.Random(19)
    for name, layers, experts, replicas, groups, nodes, gpus, top in CASES:
        weight = torch.tensor([[rng.randint(0, top) for _ in range(experts)] for _ in range(layers)])
        cases.append(run(name, weight, replicas, groups, nodes, gpus))
    # torch's order of equal loads, which balanced_packing inherits: rows of 1 to 200 loads
    # with many ties, and their `sort(descending=True).indices` (what EPLB calls).
    sorts = []
    for n in [1, 2, 5, 16, 17, 33, 64, 100, 200]:
        row = [float(rng.randint(0, 6)) for _ in range(n)]
        sorts.append({"values": row, "indices": torch.tensor([row]).sort(-1, descending=True).indices[0].tolist()})
    with open("cases.json", "w") as f:
        json.dump({"eplb_commit": "d52c72d", "torch": torch.__version__, "cases": cases, "sorts": sorts}, f)


if __name__ == "__main__":
    main()
