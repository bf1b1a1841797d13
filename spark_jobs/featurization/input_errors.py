"""The error a user's inputs cause in the featurize job (image root, manifest, model files)."""


class InputError(ValueError):
    """The images, manifest or output the user named cannot be used; the message says why."""
