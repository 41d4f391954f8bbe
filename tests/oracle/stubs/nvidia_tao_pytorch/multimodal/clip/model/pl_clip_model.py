"""Test-only stand-in: NVIDIA's image_embeddings imports this name; TAO checkpoints are not tested."""


class CLIPPlModel:  # noqa: D101
    pass
