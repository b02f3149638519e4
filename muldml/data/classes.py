"""The canonical expression classes: every dataset's labels are mapped onto these names."""

EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
