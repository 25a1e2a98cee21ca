"""Data: the gender-split COCO layout, the synthetic benchmark, transforms and loaders."""
