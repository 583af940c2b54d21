"""Data: find images, decode and cache them, augment, batch."""
