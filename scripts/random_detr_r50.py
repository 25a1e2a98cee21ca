"""Write an original-format DETR-R50 checkpoint with random weights (nothing is downloaded):
the real architecture for `faap bench --detector PATH --image-size 800`.

    python scripts/random_detr_r50.py runs/detr-r50-random.pth
"""

import argparse
import os
import sys

import torch

from faap.detector.official import random_original_state_dict

if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python scripts/random_detr_r50.py OUT.pth", file=sys.stderr)
        sys.exit(2)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[1])), exist_ok=True)
    torch.save({"model": random_original_state_dict(), "args": argparse.Namespace(dilation=False, backbone="resnet50")},
               sys.argv[1])
    print(f"wrote {sys.argv[1]}")
