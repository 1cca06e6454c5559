"""python -m orchestrator.ablate: the paper's ablation matrix on Ray Tune.

Interim: until the Ray Tune ablation lands, this runs what of the pipeline exists: it builds the
smoke matrix's models and prints their parameters and multiply-adds.
"""

from __future__ import annotations

import argparse
import sys

from workloads.analysis import count_multiply_adds, count_parameters
from workloads.models import build_model

SMOKE_MODELS = ["cifar_plain8", "cifar_resnet8", "cifar_plain20", "cifar_resnet20"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.ablate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(f"{'model':<16}{'params':>10}{'multiply-adds':>16}")
    for name in SMOKE_MODELS:
        model = build_model(name, in_channels=1)
        print(f"{name:<16}{count_parameters(model):>10,}{count_multiply_adds(model, (1, 32, 32)):>16,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
