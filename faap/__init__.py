"""faap: fairness-aware adversarial perturbations for frozen DETR-family detectors."""

__version__ = "0.1.0"

GROUPS = ("male", "female")
"""Group names; index = label used everywhere (male 0, female 1, as the 7th's discriminator)."""
MALE, FEMALE = 0, 1
