"""Faces: tracking, landmarks, alignment and lip units."""
