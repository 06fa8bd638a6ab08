"""Drives: what moves the lips. A drive turns the dubbed speech into lip-motion units per video
frame (z-scored coefficients of the bundle's lip basis, rtdub/face/lipunits.py), which the
generator renders (rtdub/render/pipeline.py, ``DubPipeline.process(units=...)``).

- :mod:`rtdub.drive.audio`: from the dubbed audio's log-mel, through the bundle's audio-to-lip
  model, causal up to the lookahead (the default drive).
"""
