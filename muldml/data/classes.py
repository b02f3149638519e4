"""Canonical expression classes: every dataset's labels are mapped onto these names."""

#: The 7 basic expressions, in the order the built-in demo and most 7-class sets use.
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: Every name a loader may emit (CK+ and 8-class AffectNet add contempt).
CANONICAL_CLASSES = EXPRESSIONS + ("contempt",)
