"""Rendering a dubbed face: the per-frame pipeline, references and compositing."""
