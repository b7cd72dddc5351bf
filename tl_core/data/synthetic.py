"""Small, learnable image folders generated on the fly (tests, benchmarks, smoke runs).

Each class is a shape in a class-specific hue on a noisy background, so even a frozen random
backbone separates them while the task is not trivially constant.

Example:
    >>> root = make_shapes_dataset("/tmp/shapes", images_per_class=20, image_size=48)
    >>> sorted(p.name for p in root.iterdir())
    ['blue_triangle', 'green_square', 'red_circle']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "red_circle": ("circle", (220, 40, 40)),
    "green_square": ("square", (40, 200, 60)),
    "blue_triangle": ("triangle", (40, 70, 220)),
    "yellow_cross": ("cross", (230, 210, 40)),
    "purple_ring": ("ring", (150, 50, 190)),
}


def draw_shape_image(
    shape: str, colour: tuple[int, int, int], image_size: int, rng: np.random.Generator
) -> Image.Image:
    """One RGB image: a jittered shape and colour on a noisy grey background."""
    background = rng.integers(60, 190, size=(image_size, image_size, 3), dtype=np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    jittered = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in colour)
    half = int(image_size * rng.uniform(0.22, 0.38))
    cx, cy = (int(rng.integers(half, image_size - half + 1)) for _ in range(2))
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=jittered)
    elif shape == "square":
        draw.rectangle(box, fill=jittered)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=jittered)
    elif shape == "cross":
        width = max(2, half // 3)
        draw.rectangle((cx - width, cy - half, cx + width, cy + half), fill=jittered)
        draw.rectangle((cx - half, cy - width, cx + half, cy + width), fill=jittered)
    elif shape == "ring":
        draw.ellipse(box, outline=jittered, width=max(2, half // 3))
    else:
        raise ValueError(f"Unknown shape {shape!r}: choose one of circle, square, triangle, cross, ring.")
    return image


def make_shapes_dataset(
    root: str | Path,
    *,
    num_classes: int = 3,
    images_per_class: int | list[int] = 20,
    image_size: int = 48,
    seed: int = 0,
    image_format: str = "PNG",
) -> Path:
    """Write `root/<class>/<class>_<i>.<ext>` and return `root`.

    Args:
        num_classes: 1 to 5 classes, taken from `SHAPE_CLASSES` in order.
        images_per_class: one count for all classes, or a list (one per class) for imbalanced sets.
        image_size: side of each square image in pixels.
        seed: the same seed writes the same pixels.
        image_format: any format Pillow writes ("PNG", "JPEG", ...).
    """
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes={num_classes} must be between 1 and {len(SHAPE_CLASSES)}.")
    counts = images_per_class if isinstance(images_per_class, list) else [images_per_class] * num_classes
    if len(counts) != num_classes:
        raise ValueError(f"images_per_class has {len(counts)} counts for {num_classes} classes.")
    root = Path(root)
    rng = np.random.default_rng(seed)
    extension = {"JPEG": "jpg"}.get(image_format.upper(), image_format.lower())
    for (class_name, (shape, colour)), count in zip(list(SHAPE_CLASSES.items())[:num_classes], counts):
        class_dir = root / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = draw_shape_image(shape, colour, image_size, rng)
            image.save(class_dir / f"{class_name}_{index:04d}.{extension}", format=image_format)
    return root
